"""The static browser demo: web/ (page, JS preprocessing, CSS) + onnxruntime-web + both models.

`build_site` assembles a directory any static file host can serve: the page's sources from web/,
onnxruntime-web's WebAssembly files from web/node_modules (pinned in web/package-lock.json,
installed by `npm ci`), the two models (checked by the Predictor, as the Gradio page loads
them), and site.json: each model's metadata and the preprocessing constants of
serve/runtime/preprocess.py, so the JavaScript port reads the reference's numbers instead of copying
them. Nothing on the page is fetched from anywhere but the site itself; the Content-Security-
Policy (a <meta> in index.html and a `_headers` file for hosts that read one) says so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flaxdigits.core import atomic, contract
from flaxdigits.serve.runtime import preprocess as pre
from flaxdigits.serve.runtime.predictor import Predictor

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
SOURCES = ("index.html", "app.js", "preprocess.js", "style.css", "favicon.svg")
ORT_DIST = Path("node_modules") / "onnxruntime-web" / "dist"
# The WebAssembly-only build of onnxruntime-web and the one runtime it loads (SIMD; threads are
# not used: the page runs one thread, which needs no cross-origin isolation).
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_DIR = "ort"
MODELS_DIR = "models"
SITE_JSON = "site.json"
CSP_MARKER = b"<!-- CSP -->"  # in web/index.html: where the <meta> policy goes

# 'wasm-unsafe-eval' lets WebAssembly compile; nothing else runs but the site's own scripts.
CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; "
    "style-src 'self'; img-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
# <meta> cannot carry frame-ancestors (browsers ignore it there); the header can.
CSP_META = CSP.removesuffix("; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".svg": "image/svg+xml",
}
META_SHOWN = (
    contract.META_MODEL,
    contract.META_PARAMS,
    contract.META_TEST_ACCURACY,
    contract.META_RECIPE,
    contract.META_VARIANT,
    contract.META_VERSION,
    contract.META_CHECKPOINT_SHA256,
    contract.META_PREPROCESSING,
)


class SiteError(RuntimeError):
    """The site cannot be built: a missing source, npm install or model; the message says which."""


def preprocess_constants() -> dict:
    """serve/runtime/preprocess.py's numbers, as web/preprocess.js reads them from site.json."""
    return {
        "methods": list(contract.PREPROCESS_METHODS),
        "default_method": contract.DEFAULT_PREPROCESS_METHOD,
        "image_side": contract.IMAGE_SIDE,
        "pixel_max": contract.PIXEL_MAX,
        "noise_level": pre.NOISE_LEVEL,
        "min_peak": pre.MIN_PEAK,
        "min_ink_pixels": pre.MIN_INK_PIXELS,
        "min_extent": pre.MIN_EXTENT,
        "speckle_min_side": pre.SPECKLE_MIN_SIDE,
        "mnist_box": pre.MNIST_BOX,
        "mnist_centre": pre.MNIST_CENTRE,
        "seed_padding": pre.SEED_PADDING,
        "empty_message": pre.EMPTY_MESSAGE,
    }


def model_entry(predictor: Predictor, file: str, data: bytes) -> dict:
    """What the page shows and checks about one model: its file, size, hash and metadata."""
    return {
        "name": predictor.name,
        "file": file,
        "bytes": len(data),
        "sha256": predictor.sha256,
        "metadata": {k: predictor.metadata[k] for k in META_SHOWN if k in predictor.metadata},
    }


def csp_meta_tag() -> str:
    """The policy as a <meta> element, for hosts that send no headers of ours."""
    return f'<meta http-equiv="Content-Security-Policy" content="{CSP_META}">'


def headers_file() -> str:
    """Netlify/Cloudflare Pages `_headers`: the CSP and friends for every path."""
    lines = ["/*"] + [f"  {k}: {v}" for k, v in HEADERS.items()]
    return "\n".join(lines) + "\n"


def build_site(models_dir, out_dir, *, int8: bool = False, web_dir=WEB_DIR) -> dict:
    """Assemble the static demo into out_dir (created; files there are replaced).

    Args:
        models_dir: where `make all` wrote mlp.onnx, cnn.onnx (+ .int8.onnx) and manifests.
        out_dir: the site's root directory.
        int8: ship the int8 models instead of the float ones.
        web_dir: the page's sources and node_modules (web/ of this repository).

    Returns:
        {path relative to out_dir: bytes} of every file written.

    Raises:
        SiteError: a source, onnxruntime-web (run `npm ci` in web/) or a model is missing.
        ModelLoadError: a model file fails the Predictor's checks.
    """
    web_dir, out = Path(web_dir), Path(out_dir)
    missing = [name for name in SOURCES if not (web_dir / name).is_file()]
    if missing:
        raise SiteError(f"{web_dir} lacks {', '.join(missing)}: not a flaxdigits web/ directory")
    if (web_dir / "index.html").read_bytes().count(CSP_MARKER) != 1:
        raise SiteError(f"{web_dir / 'index.html'} needs one {CSP_MARKER.decode()} line")
    ort_missing = [name for name in ORT_FILES if not (web_dir / ORT_DIST / name).is_file()]
    if ort_missing:
        raise SiteError(
            f"onnxruntime-web is not installed in {web_dir} (no {ort_missing[0]}): "
            f"run `npm ci --prefix {web_dir}` (or `make web`)"
        )
    suffix = ".int8.onnx" if int8 else ".onnx"
    models_dir = Path(models_dir)
    paths = {name: models_dir / f"{name}{suffix}" for name in contract.MODEL_NAMES}
    absent = [p.name for p in paths.values() if not p.is_file()]
    if absent:
        raise SiteError(
            f"{models_dir} has no {' or '.join(absent)}: train and export the models first "
            "with `make all`"
        )
    models, files = [], {}
    for name, path in paths.items():  # every model checked before anything is written
        predictor = Predictor(path)  # the manifest beside it must list this file and its hash
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != predictor.sha256:
            raise SiteError(f"{path} changed while the site was built: build again")
        rel = f"{MODELS_DIR}/{name}.onnx"
        files[rel] = data
        models.append(model_entry(predictor, rel, data))
    written: dict[str, int] = {}

    def put(rel: str, data: bytes) -> None:
        atomic.write_bytes_atomic(out / rel, data)
        written[rel] = len(data)

    for rel, data in files.items():
        put(rel, data)
    for name in ORT_FILES:
        put(f"{ORT_DIR}/{name}", (web_dir / ORT_DIST / name).read_bytes())
    for name in SOURCES:
        data = (web_dir / name).read_bytes()
        if name == "index.html":
            data = data.replace(CSP_MARKER, csp_meta_tag().encode())
        put(name, data)
    site = {
        "models": models,
        "labels": list(contract.LABELS),
        "variant": "int8" if int8 else "float32",
        "canvas": {"width": contract.CANVAS_SIZE[0], "height": contract.CANVAS_SIZE[1]},
        "preprocess": preprocess_constants(),
        "ort": {"dir": f"{ORT_DIR}/", "version": _ort_version(web_dir)},
    }
    put(SITE_JSON, json.dumps(site, indent=1).encode())
    put("_headers", headers_file().encode())
    return written


def _ort_version(web_dir: Path) -> str:
    package = web_dir / "node_modules" / "onnxruntime-web" / "package.json"
    return str(json.loads(package.read_text()).get("version", ""))
