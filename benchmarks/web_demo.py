"""The browser demo's figures (issue 15): site size, first load, stroke end to both answers in
headless Chromium, against the Gradio page's round trip in the same sitting.

    python -m benchmarks.web_demo --models models [--strokes 40] [--out build/web_demo.json]

Both pages are drawn on with the same mouse strokes; each time is measured inside the page, from
the pointer-up event to the last change of the answer cards that follows it (DOM updated; paint
not included for either). Needs Debian's Chromium and web/'s npm packages (`make web`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from flaxdigits.export import site as web
from tests.support import web_support as ws
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.ports import on_free_port

DIGITS = {
    "1": [(0.5, 0.15), (0.5, 0.85)],
    "7": [(0.3, 0.2), (0.7, 0.2), (0.45, 0.85)],
    "4": [(0.6, 0.15), (0.25, 0.6), (0.75, 0.6)],
    "0": [
        (0.5, 0.15),
        (0.3, 0.35),
        (0.3, 0.65),
        (0.5, 0.85),
        (0.7, 0.65),
        (0.7, 0.35),
        (0.5, 0.15),
    ],
}
# Inside the page: pointer-up time, and the time of every later change under the answer cards.
WATCH = """
(selector) => {
  window.__rt = { up: null, changes: [] };
  document.addEventListener("pointerup", () => {
    window.__rt.up = performance.now(); window.__rt.changes = [];
  }, true);
  const observer = new MutationObserver(() => {
    if (window.__rt.up !== null) window.__rt.changes.push(performance.now());
  });
  for (const el of document.querySelectorAll(selector)) {
    observer.observe(el, { subtree: true, childList: true, attributes: true, characterData: true });
  }
}
"""


def percentiles(values: list[float]) -> dict:
    q = statistics.quantiles(values, n=20, method="inclusive")
    return {"n": len(values), "p50": statistics.median(values), "p95": q[18], "max": max(values)}


def sizes(site: Path) -> dict:
    files = {
        str(p.relative_to(site)): (p.stat().st_size, len(gzip.compress(p.read_bytes(), 9)))
        for p in sorted(site.rglob("*"))
        if p.is_file()
    }
    total = sum(s for s, _ in files.values())
    return {"files": files, "total": total, "total_gzip": sum(g for _, g in files.values())}


def round_trip(page, box, points, quiet_s: float) -> tuple[float, float]:
    """Pointer-up to the first and to the last change of the cards after it (quiet_s later)."""
    ws.mouse_stroke(page, box, points)
    time.sleep(quiet_s)
    rt = page.evaluate("window.__rt")
    if not rt["changes"]:
        return None  # counted as missing: no answer within quiet_s
    return rt["changes"][0] - rt["up"], rt["changes"][-1] - rt["up"]


def measure_web(playwright, url: str, strokes: int, profile: Path) -> dict:
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        viewport={"width": 1000, "height": 900},
    )  # fmt: skip
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_selector("body[data-ready='models']", timeout=60_000)
    load_s = time.perf_counter() - start
    nav = page.evaluate("JSON.parse(JSON.stringify(performance.getEntriesByType('navigation')[0]))")
    ready_ms = page.evaluate("window.fdStats.loadMs")
    page.evaluate(WATCH, ".fd-card")
    box = page.locator("#sketch").bounding_box()
    observed = []
    digits = list(DIGITS.values())
    for i in range(strokes):
        if page.is_enabled("#clear"):
            page.click("#clear")
        page.wait_for_function("window.fdStats.idle")
        observed.append(round_trip(page, box, digits[i % len(digits)], 0.25))
    stats = page.evaluate("window.fdStats")
    context.close()
    return {
        "first_load_s": load_s,
        "models_ready_ms_since_navigation": ready_ms,
        "dom_content_loaded_ms": nav["domContentLoadedEventEnd"],
        "stroke_to_answers_ms": percentiles(stats["strokeToAnswerMs"][-strokes:]),
        "stroke_to_cards_changed_ms": percentiles([o[1] for o in observed if o is not None]),
        "strokes_without_answer": sum(o is None for o in observed),
        "pass_ms": percentiles(stats["passMs"]),
        "models_ms": percentiles(stats["modelMs"]),
    }


def measure_gradio(playwright, models: Path, strokes: int, profile: Path) -> dict:
    from flaxdigits.serve.page import app

    _, demo = on_free_port(
        lambda port: app.launch(models_dir=models, host="127.0.0.1", port=port, block=False)
    )
    try:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 1000},
        )  # fmt: skip
        page = context.new_page()
        page.goto(demo.local_url)
        page.wait_for_selector("#sketch button[aria-label='Brush'].highlight", timeout=60_000)
        page.evaluate(WATCH, "#result-mlp, #result-cnn")
        box = ws.centred_square(page.locator("#sketch canvas").first.bounding_box())
        observed = []
        digits = list(DIGITS.values())
        for i in range(strokes):
            page.click("#sketch button[aria-label='Clear canvas']")
            time.sleep(1.0)
            observed.append(round_trip(page, box, digits[i % len(digits)], 1.5))
        context.close()
    finally:
        demo.close()
    answered = [o for o in observed if o is not None]
    return {
        "stroke_to_first_card_change_ms": percentiles([first for first, _ in answered]),
        "stroke_to_cards_changed_ms": percentiles([last for _, last in answered]),
        "strokes_without_answer": len(observed) - len(answered),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models")
    parser.add_argument("--strokes", type=int, default=40)
    parser.add_argument("--gradio-strokes", type=int, default=20)
    parser.add_argument("--out", default="build/web_demo.json")
    parser.add_argument("--only", choices=("web", "gradio"), help="measure one page only")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        tmp = Path(tmp)
        for variant in ("float32", "int8") if args.only != "gradio" else ():
            site = tmp / variant
            web.build_site(args.models, site, int8=variant == "int8")
            result[f"size_{variant}"] = sizes(site)
            with ws.static_server(site) as url:
                result[f"web_{variant}"] = measure_web(p, url, args.strokes, tmp / f"p-{variant}")
            print(variant, json.dumps(result[f"web_{variant}"]), flush=True)
        if args.only != "web":
            result["gradio"] = measure_gradio(p, Path(args.models), args.gradio_strokes, tmp / "pg")
            print("gradio", json.dumps(result["gradio"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
