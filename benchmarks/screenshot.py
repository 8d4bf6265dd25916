"""The README's picture of the page: a digit drawn with the mouse in headless Chromium, both
models' answers, saved small.

    python -m benchmarks.screenshot [--models MODELS_OR_RELEASE] [--out docs/images/page.png]

It serves the page from the given models (a directory or a release; default: the committed
release `make demo` serves), draws a 7 the way a visitor does, waits for both answers and saves
the page at 1280 px wide as a palette PNG. Needs Debian's Chromium and Playwright (`make install`,
`sudo make browser-deps`).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

from flaxdigits.core.atomic import write_bytes_atomic
from flaxdigits.release import reader
from tests.support import web_support
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, browser_missing
from tests.support.ports import on_free_port

SEVEN = [(0.3, 0.22), (0.72, 0.22), (0.45, 0.84)]
VIEWPORT = {"width": 1280, "height": 900}
COLOURS = 64  # a palette of 64 colours keeps the picture sharp and small


def draw_and_capture(url: str, profile: Path) -> bytes:
    """The page at url with a 7 drawn and both answers shown, as PNG bytes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport=VIEWPORT,
        )  # fmt: skip
        try:
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.wait_for_selector("#sketch button[aria-label='Brush'].highlight")
            box = web_support.centred_square(page.locator("#sketch canvas").first.bounding_box())
            web_support.mouse_stroke(page, box, SEVEN, 4)
            page.wait_for_function(
                "() => [...document.querySelectorAll('.fd-card')].length > 0 && "
                "[...document.querySelectorAll('.fd-card')].every(c => c.dataset.digit !== '')"
            )
            return page.screenshot(full_page=False)
        finally:
            context.close()


def small_png(png: bytes) -> bytes:
    """The screenshot as an optimised palette PNG."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    image.quantize(COLOURS).save(out, "PNG", optimize=True)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Serve, draw, capture, write; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="models directory or release (default: demo/'s release)")
    parser.add_argument("--out", default="docs/images/page.png")
    args = parser.parse_args(argv)
    reason = browser_missing()
    if reason:
        print(f"screenshot: {reason}", file=sys.stderr)
        return 1
    models = args.models or str(next(iter(sorted(Path("demo").glob("*.tar.gz"))), ""))
    if not models:
        print("screenshot: no --models and no release in demo/: run make all", file=sys.stderr)
        return 1
    from flaxdigits.serve.page import app

    profile = tempfile.TemporaryDirectory(prefix="flaxdigits-shot-")
    with reader.models_dir(models) as folder, profile:
        _, demo = on_free_port(
            lambda port: app.launch(models_dir=folder, host="127.0.0.1", port=port, block=False)
        )
        try:
            png = small_png(draw_and_capture(demo.local_url, Path(profile.name)))
        finally:
            demo.close()
    write_bytes_atomic(Path(args.out), png)
    print(f"{args.out}: {len(png):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
