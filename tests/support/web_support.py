"""What the browser-demo tests share: Node and web/'s npm packages (installed on first use), the
site built from a models dir, a loopback static server with the site's headers, a headless
Chromium page of it that records errors, requests and CSP violations, and the fixed set of
canvases both preprocessings read."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from PIL import Image, ImageDraw

from flaxdigits.export import site as web
from flaxdigits.serve.runtime import preprocess as pre
from flaxdigits.serve.runtime.decode import ImageInputError
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.drawings import draw_digit, drawing, rgba_on_transparent

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"
NODE_RUN = ROOT / "web" / "test" / "node_run.mjs"
REQUIRE_ENV = "FLAXDIGITS_REQUIRE_BROWSER"
NPM_SECONDS = 300
PAGE_TIMEOUT_MS = 30_000
# Reports every Content-Security-Policy violation the page triggers.
CSP_WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""
# A WebAssembly engine without SIMD, as on older phones: modules holding SIMD opcodes (0xfd
# prefix) neither validate nor compile. onnxruntime-web ships only a SIMD build.
NO_SIMD = """
(() => {
  const simd = (bytes) => {
    const b = bytes instanceof ArrayBuffer ? new Uint8Array(bytes)
      : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return b.includes(0xfd);
  };
  const refuse = () => Promise.reject(new WebAssembly.CompileError("SIMD is not supported"));
  const { validate, compile, instantiate } = WebAssembly;
  WebAssembly.validate = (b) => !simd(b) && validate(b);
  WebAssembly.compile = (b) => (simd(b) ? refuse() : compile(b));
  WebAssembly.instantiate = (b, i) =>
    (b instanceof WebAssembly.Module || !simd(b) ? instantiate(b, i) : refuse());
  WebAssembly.compileStreaming = async (r) => WebAssembly.compile(await (await r).arrayBuffer());
  WebAssembly.instantiateStreaming = async (r, i) =>
    WebAssembly.instantiate(await (await r).arrayBuffer(), i);
})();
"""


def unavailable(reason: str):
    """Skip with the reason; in CI (FLAXDIGITS_REQUIRE_BROWSER=1) fail instead."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but {reason}")
    pytest.skip(reason)


@functools.cache
def _npm_ci() -> str | None:
    """Run `npm ci` in web/ once if onnxruntime-web is missing; why it cannot, or None.

    pytest-xdist workers share web/: the first takes a lock and installs, the others wait.
    """
    ort = web.WEB_DIR / web.ORT_DIST / web.ORT_FILES[0]
    if ort.is_file():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return "npm not found: install Debian's nodejs and npm (`sudo make browser-deps`)"
    digest = hashlib.sha256(str(web.WEB_DIR).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"flaxdigits-npm-{digest}.lock"
    with FileLock(lock):
        if ort.is_file():  # another worker installed it meanwhile
            return None
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=web.WEB_DIR,
            capture_output=True,
            text=True,
            timeout=NPM_SECONDS,
        )
    if done.returncode != 0 or not ort.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"`npm ci` in web/ failed: {tail[0]}"
    return None


def require_node() -> str:
    """The node binary with web/'s packages installed, or skip (fail in CI) with the reason."""
    node = shutil.which("node")
    if node is None:
        unavailable("node not found: install Debian's nodejs and npm (`sudo make browser-deps`)")
    reason = _npm_ci()
    if reason:
        unavailable(reason)
    return node


def run_node(node: str, site: Path, cases: list[dict], workdir: Path, inputs=None) -> dict:
    """web/test/node_run.mjs over RGBA canvases (and optionally given 28x28 float inputs)."""
    job_cases = []
    for i, case in enumerate(cases):
        path = workdir / f"canvas-{i}.rgba"
        np.ascontiguousarray(case["rgba"], np.uint8).tofile(path)
        height, width = case["rgba"].shape[:2]
        job_cases.append(
            {"rgba": str(path), "width": width, "height": height, "method": case["method"]}
        )
    job = {"site": str(site), "cases": job_cases}
    if inputs is not None:
        job["inputs"] = str(workdir / "inputs.f32")
        np.ascontiguousarray(inputs, np.float32).tofile(job["inputs"])
    return run_node_job(node, NODE_RUN, job, workdir, timeout=300)


def run_node_job(node: str, script: Path, job: dict, workdir: Path, timeout: float) -> dict:
    """A web/test/*.mjs runner over one job: job.json in, out.json back, both in workdir."""
    (workdir / "job.json").write_text(json.dumps(job))
    subprocess.run(
        [node, str(script), str(workdir / "job.json"), str(workdir / "out.json")],
        check=True,
        timeout=timeout,
    )
    return json.loads((workdir / "out.json").read_text())


# ------------------------------------------------------------------------------- canvases


def to_rgba(image) -> np.ndarray:
    """A canvas as the browser holds it: (H, W, 4) uint8."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.stack([a, a, a], axis=2)
    if a.shape[2] == 3:
        a = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(a, np.uint8)


def corpus_canvases() -> dict[str, np.ndarray]:
    """tests/corpus's images of the digit (and its empty ones), decoded as serve decodes them."""
    index = json.loads((CORPUS / "index.json").read_text())["cases"]
    out = {}
    for case in index:
        if case["expect"] not in ("match", "empty") or case["family"] == "bomb":
            continue
        try:
            img = pre._to_image(str(CORPUS / case["file"]))  # "L" or "RGBA", 8 bits
        except ImageInputError:
            continue
        out[f"corpus/{case['file']}"] = to_rgba(img.convert("RGBA"))
    return out


def stroke_canvases() -> dict[str, np.ndarray]:
    """Drawn digits: the strokes of drawings.py on white, grey, dark and transparent canvases."""
    seven = draw_digit()
    out = {
        "drawn/seven": to_rgba(seven),
        "drawn/seven-small-offset": to_rgba(draw_digit((400, 400), (150, 180), 0.4, 10)),
        "drawn/seven-large": to_rgba(draw_digit((1000, 900), (0, 0), 3.0, 30)),
        "drawn/seven-thin": to_rgba(draw_digit(width=3)),
        "drawn/seven-transparent": rgba_on_transparent(seven),
        "drawn/seven-white-brush": rgba_on_transparent(seven, colour=255),
        "drawn/seven-page": to_rgba(drawing()),
        "drawn/seven-grey-paper": to_rgba(np.where(seven < 128, 60, 200).astype(np.uint8)),
        "drawn/seven-dark": to_rgba(np.where(seven < 128, 220, 30).astype(np.uint8)),
    }
    one = Image.new("L", (400, 400), 255)
    ImageDraw.Draw(one).line([(200, 60), (205, 340)], fill=0, width=28)
    out["drawn/one"] = to_rgba(one)
    zero = Image.new("L", (400, 400), 255)
    ImageDraw.Draw(zero).ellipse([(110, 70), (290, 330)], outline=0, width=26)
    out["drawn/zero"] = to_rgba(zero)
    dot = Image.new("L", (400, 400), 255)
    ImageDraw.Draw(dot).ellipse([(200, 200), (204, 204)], fill=0)
    out["drawn/stray-dot"] = to_rgba(dot)
    out["drawn/blank"] = to_rgba(np.full((400, 400), 255, np.uint8))
    out.update(scribbles(30))
    return out


def scribbles(count: int) -> dict[str, np.ndarray]:
    """Seeded random strokes: 2-6 point polylines of random width on canvases of 40-900 px,
    dark on light or light on dark, some grey: every size class the port has a branch for."""
    out = {}
    for i in range(count):
        rng = np.random.default_rng([15, 1, i])
        width, height = (int(v) for v in rng.integers(40, 901, size=2))
        paper, ink = (255, int(rng.integers(0, 90))) if rng.random() < 0.7 else (20, 235)
        img = Image.new("L", (width, height), paper)
        points = [
            (float(rng.uniform(0.1, 0.9) * width), float(rng.uniform(0.1, 0.9) * height))
            for _ in range(int(rng.integers(2, 7)))
        ]
        pen = max(1, round(rng.uniform(0.01, 0.08) * min(width, height)))
        ImageDraw.Draw(img).line(points, fill=ink, width=pen, joint="curve")
        out[f"drawn/scribble-{i}"] = to_rgba(img)
    return out


def mnist_canvases(test_images: np.ndarray, count: int) -> dict[str, np.ndarray]:
    """The first `count` MNIST test digits redrawn large, as canvas-eval draws them (seeded)."""
    from flaxdigits.evaluation.canvases import render_canvas

    return {
        f"mnist/{i}": to_rgba(render_canvas(test_images[i], np.random.default_rng([15, i])))
        for i in range(count)
    }


# --------------------------------------------------------------------------------- serving


class SiteHandler(SimpleHTTPRequestHandler):
    """Static files with the site's headers (CSP, nosniff, ...) and its content types."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, **web.CONTENT_TYPES}

    def end_headers(self):
        for key, value in web.HEADERS.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, *args):  # quiet: pytest shows failures
        pass


def centred_square(box: dict) -> dict:
    """The largest square centred in box ({x, y, width, height}): where the Gradio Sketchpad's
    square canvas lies inside its element."""
    side = min(box["width"], box["height"])
    return {
        "x": box["x"] + (box["width"] - side) / 2,
        "y": box["y"] + (box["height"] - side) / 2,
        "width": side,
        "height": side,
    }


def mouse_stroke(page, box: dict, points, steps: int = 4) -> None:
    """One mouse stroke in a Playwright page through points given as fractions (x, y) of box
    ({x, y, width, height} in page pixels): `steps` moves per segment, which the brush joins
    with straight lines (each move costs a canvas read-back in software rendering)."""
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(xy, xy[1:], strict=False):
        for i in range(1, steps + 1):
            page.mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
    page.mouse.up()


@contextlib.contextmanager
def static_server(directory: Path):
    """The directory on a free loopback port: yields its base URL."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(SiteHandler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def open_page(playwright, url, profile, *, init_scripts=(), **context_options):
    """(context, page) of url in headless Chromium once the page is ready (body[data-ready]):
    page.requested lists every URL it asked for, page.errors its errors, window.__csp its CSP
    violations."""
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
        **({"viewport": {"width": 1000, "height": 900}} | context_options),
    )
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.requested = []
    page.errors = []
    page.on("request", lambda r: page.requested.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    for script in (CSP_WATCH, *init_scripts):
        page.add_init_script(script)
    page.goto(url)
    page.wait_for_selector("body[data-ready]")
    return context, page


@contextlib.contextmanager
def served_page(directory: Path, profile: Path):
    """open_page of the site in directory, served on a loopback port; closed afterwards."""
    from playwright.sync_api import sync_playwright

    with static_server(directory) as url, sync_playwright() as p:
        context, page = open_page(p, url, profile)
        try:
            yield page
        finally:
            context.close()
