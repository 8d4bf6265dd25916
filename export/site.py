"""The static browser demo: web/ (page, JS preprocessing, CSS) + onnxruntime-web + both models,
and the gate when the models folder has one.

`build_site` assembles a directory any static file host can serve: the page's sources (web/ of a
checkout, installed as the package data `flaxdigits.web`), onnxruntime-web's WebAssembly files
(pinned by web/package-lock.json: web/node_modules after `npm ci` in a checkout, else installed
once by `npm ci` into the cache), the two models (checked by the Predictor, as the Gradio page
loads them), the gate of the shipped variant if there is one (contract.GATE_NAME: its drawing
rule, checked against the shipped files as serve/runtime/model_set.py checks it, decides "not a
digit" with both models), and site.json: each model's metadata and answer rule, the gate's file
and drawing rule, and the preprocessing constants of serve/runtime/preprocess.py, so the
JavaScript port reads the reference's numbers instead of copying them. Nothing on the page is
fetched from anywhere but the site itself; the Content-Security-Policy (a <meta> in index.html
and a `_headers` file for hosts that read one) says so.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from flaxdigits.core import atomic, contract
from flaxdigits.data.mnist import cache_dir
from flaxdigits.serve.runtime import preprocess as pre
from flaxdigits.serve.runtime.model_set import check_members, gate_rule
from flaxdigits.serve.runtime.predictor import Predictor

WEB_DIR = Path(str(importlib.resources.files("flaxdigits.web")))
LOCK_FILES = ("package.json", "package-lock.json")
NPM_TIMEOUT_S = 600
SOURCES = ("index.html", "app.js", "preprocess.js", "answer.js", "style.css", "favicon.svg")
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
    contract.META_CHECKPOINT_STATE_SHA256,
    contract.META_PREPROCESSING,
)


class SiteError(RuntimeError):
    """The site cannot be built: a missing source, npm install or model; the message says which."""


def preprocess_constants() -> dict:
    """serve/runtime/preprocess.py's numbers, as web/preprocess.js reads them from site.json."""
    return {
        "methods": list(contract.PREPROCESS_METHODS),
        "renamed_methods": contract.RENAMED_METHODS,
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
        "box_padding": pre.BOX_PADDING,
        "empty_message": pre.EMPTY_MESSAGE,
    }


def model_entry(predictor: Predictor, file: str, data: bytes) -> dict:
    """What the page shows and checks about one model: its file, size, hash and metadata, and
    its answer rule as the Predictor read and checked it (None in a file from before the rule),
    which web/answer.js applies. onnxruntime-web's sessions expose only their inputs' and
    outputs' metadata, not a model's metadata_props: the builder hands the rule over."""
    return {
        "name": predictor.name,
        "file": file,
        "bytes": len(data),
        "sha256": predictor.sha256,
        "metadata": {k: predictor.metadata[k] for k in META_SHOWN if k in predictor.metadata},
        "answer_rule": predictor.answer_rule,
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
        models_dir: where `make all` wrote mlp.onnx, cnn.onnx (+ .int8.onnx) and manifests,
            and gate.onnx (+ .int8.onnx) with gate.json where there is a gate.
        out_dir: the site's root directory.
        int8: ship the int8 models (and gate) instead of the float ones.
        web_dir: the page's sources (web/ of this repository, or the installed package data).

    Returns:
        {path relative to out_dir: bytes} of every file written.

    Raises:
        SiteError: a source, onnxruntime-web (and npm to install it) or a model is missing.
        ModelLoadError: a model file fails the Predictor's checks, the gate has no manifest or
            drawing rule, or its rule was fitted with other files than the shipped ones.
    """
    web_dir, out = Path(web_dir), Path(out_dir)
    check_sources(web_dir)
    # Everything is checked before anything is written.
    predictors, models, files = read_models(Path(models_dir), int8)
    gate, gate_files = read_gate(Path(models_dir), int8, predictors)
    files |= gate_files
    ort = ort_dist(web_dir)
    files |= {f"{ORT_DIR}/{name}": (ort / name).read_bytes() for name in ORT_FILES}
    for name in SOURCES:
        data = (web_dir / name).read_bytes()
        files[name] = (
            data.replace(CSP_MARKER, csp_meta_tag().encode()) if name == "index.html" else data
        )
    site = {
        "models": models,
        "gate": gate,
        "labels": list(contract.LABELS),
        "recipes": list(contract.RECIPE_NAMES),
        "renamed_recipes": contract.RENAMED_RECIPES,
        "variant": _variant(int8),
        "canvas": {"width": contract.CANVAS_SIZE[0], "height": contract.CANVAS_SIZE[1]},
        "preprocess": preprocess_constants(),
        "ort": {"dir": f"{ORT_DIR}/", "version": _ort_version(ort)},
    }
    files[SITE_JSON] = json.dumps(site, indent=1).encode()
    files["_headers"] = headers_file().encode()
    for rel, data in files.items():
        atomic.write_bytes_atomic(out / rel, data)
    return {rel: len(data) for rel, data in files.items()}


def check_sources(web_dir: Path) -> None:
    """web_dir holds every source of the page, and index.html its one CSP marker."""
    missing = [name for name in SOURCES if not (web_dir / name).is_file()]
    if missing:
        raise SiteError(f"{web_dir} lacks {', '.join(missing)}: not a flaxdigits web/ directory")
    if (web_dir / "index.html").read_bytes().count(CSP_MARKER) != 1:
        raise SiteError(f"{web_dir / 'index.html'} needs one {CSP_MARKER.decode()} line")


def read_models(
    models_dir: Path, int8: bool
) -> tuple[dict[str, Predictor], list[dict], dict[str, bytes]]:
    """({name: Predictor}, site.json's model entries, {site path: bytes}) of both models, each
    checked by the Predictor (the manifest beside it must list the file and its hash)."""
    paths = {
        name: models_dir / contract.model_file(name, _variant(int8))
        for name in contract.MODEL_NAMES
    }
    absent = [p.name for p in paths.values() if not p.is_file()]
    if absent:
        raise SiteError(
            f"{models_dir} has no {' or '.join(absent)}: train and export the models first "
            "with `make all`"
        )
    predictors, models, files = {}, [], {}
    for name, path in paths.items():
        predictor = predictors[name] = Predictor(path)
        data = _read_checked(path, predictor)
        rel = f"{MODELS_DIR}/{name}.onnx"
        files[rel] = data
        models.append(model_entry(predictor, rel, data))
    return predictors, models, files


def read_gate(
    models_dir: Path, int8: bool, predictors: dict[str, Predictor]
) -> tuple[dict | None, dict[str, bytes]]:
    """(site.json's gate entry, {site path: bytes}) of the gate of the shipped variant, or
    (None, {}) where the folder has none. The gate is loaded as the Gradio page loads it: its
    manifest is required, and the drawing rule it carries for that variant must name the
    shipped files by sha256 (a stale rule is refused, never shipped)."""
    path = models_dir / contract.model_file(contract.GATE_NAME, _variant(int8))
    if not path.is_file():
        return None, {}
    gate = Predictor(path)
    rule = gate_rule(gate)  # ModelLoadError: no manifest, no rule for this variant
    check_members(rule, predictors, gate)  # ModelLoadError: fitted with other files
    data = _read_checked(path, gate)
    rel = f"{MODELS_DIR}/{contract.GATE_NAME}.onnx"
    entry = {"file": rel, "bytes": len(data), "sha256": gate.sha256, "drawing_rule": rule}
    return entry, {rel: data}


def _variant(int8: bool) -> str:
    return "int8" if int8 else "float32"


def _read_checked(path: Path, predictor: Predictor) -> bytes:
    """The file's bytes, which must be those the Predictor checked."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != predictor.sha256:
        raise SiteError(f"{path} changed while the site was built: build again")
    return data


def ort_dist(web_dir: Path, cache: Path | None = None) -> Path:
    """onnxruntime-web's dist/ folder, as web_dir's package-lock.json pins it: web_dir's own
    node_modules (a checkout after `npm ci`), else an `npm ci` of the lock file in the cache
    (an installed package), made once per lock file."""
    local = web_dir / ORT_DIST
    if all((local / name).is_file() for name in ORT_FILES):
        return local
    locks = b"".join((web_dir / name).read_bytes() for name in LOCK_FILES)
    target = Path(cache or cache_dir() / "web") / hashlib.sha256(locks).hexdigest()[:16]
    if not all((target / ORT_DIST / name).is_file() for name in ORT_FILES):
        _npm_ci(web_dir, target)
    return target / ORT_DIST


def _npm_ci(web_dir: Path, target: Path) -> None:
    """`npm ci` of web_dir's lock file into target (a fresh folder renamed into place)."""
    npm = shutil.which("npm")
    if npm is None:
        raise SiteError(
            f"onnxruntime-web is not installed in {web_dir} and npm is not on PATH: install "
            "Node.js and npm (Debian: `apt install nodejs npm`), or in a checkout run "
            f"`npm ci --prefix {web_dir}` (or `make web`)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".npm-") as tmp:
        for name in LOCK_FILES:
            shutil.copyfile(web_dir / name, Path(tmp) / name)
        done = subprocess.run(  # noqa: S603 - npm from PATH, fixed arguments, our lock file
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error", "--prefer-offline"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise SiteError(f"`npm ci` of onnxruntime-web failed: {done.stderr.strip()[-500:]}")
        shutil.rmtree(target, ignore_errors=True)
        Path(tmp).rename(target)
        Path(tmp).mkdir()  # for TemporaryDirectory's own clean-up


def _ort_version(dist: Path) -> str:
    package = dist.parent / "package.json"  # node_modules/onnxruntime-web/package.json
    return str(json.loads(package.read_text()).get("version", ""))
