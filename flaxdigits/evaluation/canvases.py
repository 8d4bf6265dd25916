"""Canvas accuracy: the MNIST test digits redrawn the way a person's canvas looks, through
preprocessing and every exported model.

    flaxdigits canvas-eval --models models --out reports/canvas_accuracy.json
    flaxdigits canvas-eval --models models models/original \
        --out reports/canvas_accuracy.json reports/canvas_accuracy_seed.json

(several directories, paired with as many reports: the canvases are rendered and preprocessed
once, for all of them, and each report is the one a run on its directory alone writes.)

Each test digit becomes a large canvas (280-800 px a side, random size and position), black ink
on white (RGB) or on a transparent RGBA canvas like the Sketchpad's, with a smooth stroke of
varied width: the digit is upscaled with bicubic interpolation, blurred and thresholded at a
random level (a low level thickens the stroke, a high one thins it), with anti-aliased edges.
Rendering is seeded per digit, so any subset and any worker count give the same canvases.
numpy, Pillow and onnxruntime only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from flaxdigits.core import contract
from flaxdigits.core.atomic import write_json_atomic
from flaxdigits.core.tables import markdown_table
from flaxdigits.evaluation.digits import (
    CHUNK,
    accuracy,
    check_limit,
    chunks,
    load_test_digits,
    worker_count,
    worker_pool,
)
from flaxdigits.serve.runtime.decode import ImageInputError
from flaxdigits.serve.runtime.predictor import Predictor, model_files
from flaxdigits.serve.runtime.preprocess import preprocess

SCHEMA = "flaxdigits.canvas_accuracy.v1"
CANVAS_SIDE = (280, 800)  # pixels, each side drawn independently
DIGIT_FRACTION = (0.3, 0.85)  # height of the digit's 20-px MNIST box / shorter canvas side
BLUR = (0.0, 0.7)  # Gaussian radius before thresholding, in MNIST pixels
THRESHOLD = (0.2, 0.6)  # stroke edge level: low -> thick stroke, high -> thin
EDGE = 0.08  # width of the anti-aliasing ramp around the threshold, in intensity
TRANSPARENT = 0.5  # share of canvases drawn on transparent RGBA instead of white RGB
METHODS = contract.PREPROCESS_METHODS


def render_canvas(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Redraw one (28, 28) uint8 MNIST digit as a canvas: (H, W, 3) or (H, W, 4) uint8."""
    height, width = (int(s) for s in rng.integers(CANVAS_SIDE[0], CANVAS_SIDE[1] + 1, size=2))
    scale = rng.uniform(*DIGIT_FRACTION) * min(height, width) / 20  # canvas px per MNIST px
    side = round(28 * scale)
    big = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    radius = rng.uniform(*BLUR) * scale
    if radius >= 0.5:
        big = big.filter(ImageFilter.GaussianBlur(radius))
    level = np.asarray(big, np.float32) / 255  # (side, side)
    ink = np.clip((level - rng.uniform(*THRESHOLD)) / EDGE + 0.5, 0, 1)
    rows, cols = np.nonzero(ink)
    if rows.size == 0:  # a threshold above a faint digit: keep the smooth upscale instead
        ink, (rows, cols) = level, np.nonzero(level)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = ink.shape
    top = int(rng.integers(0, max(height - h, 0) + 1))
    left = int(rng.integers(0, max(width - w, 0) + 1))
    canvas = np.zeros((height, width), np.float32)
    canvas[top : top + h, left : left + w] = ink[: height - top, : width - left]
    if rng.random() < TRANSPARENT:  # black strokes on a transparent canvas, RGB 0 underneath
        out = np.zeros((height, width, 4), np.uint8)
        out[..., 3] = np.rint(canvas * 255)
        return out
    paper = np.rint((1 - canvas) * 255).astype(np.uint8)
    return np.repeat(paper[..., None], 3, axis=2)


def _render_and_preprocess(
    digits: np.ndarray, indices: np.ndarray, seed: int, methods: Sequence[str] = METHODS
) -> dict:
    """Worker: canvases for digits[i] (seeded by (seed, indices[i])) through each of methods."""
    out = {m: np.zeros((len(digits), 28, 28), np.float32) for m in methods}
    failed = {m: np.zeros(len(digits), bool) for m in methods}
    for i, (digit, index) in enumerate(zip(digits, indices, strict=True)):
        canvas = render_canvas(digit, np.random.default_rng([seed, int(index)]))
        for method in methods:
            try:
                out[method][i] = preprocess(canvas, method).image
            except ImageInputError:
                failed[method][i] = True
    return {"images": out, "failed": failed}


def drawn_digits(
    digits: np.ndarray,
    *,
    seed: int = 0,
    method: str = contract.DEFAULT_PREPROCESS_METHOD,
    workers: int | None = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) float32, refused (N,) bool): the first N test digits `digits` drawn
    as canvas-eval draws them (digit i seeded by (seed, i): the same canvases as its first N)
    and preprocessed by `method`, a canvas the preprocessing refuses left black and flagged.
    workers: processes (1: this one; None or 0: all cores)."""
    method = contract.check_method(method)
    workers = worker_count(workers)
    if workers == 1 or len(digits) <= CHUNK:
        parts = [_render_and_preprocess(digits, np.arange(len(digits)), seed, (method,))]
    else:
        args = _chunk_args(digits, chunks(len(digits)), seed)
        with worker_pool(workers) as pool:
            parts = list(pool.map(_render_and_preprocess, *args, [(method,)] * len(args[0])))
    images = np.concatenate([p["images"][method] for p in parts])
    return images, np.concatenate([p["failed"][method] for p in parts])


def evaluate_canvas(
    models_dir, *, limit: int | None = None, seed: int = 0, workers: int | None = None
) -> dict:
    """Accuracy of every model in models_dir on canvas-drawn MNIST test digits, per method.

    Args:
        models_dir: directory holding the exported NAME.onnx files (and manifests).
        limit: use only the first `limit` test digits.
        seed: rendering seed.
        workers: processes rendering and preprocessing (default: all cores).

    Returns:
        The report: accuracy[model][method], raw test accuracy, the sha256 of each model file
        measured, timings and a markdown table.

    Raises:
        ModelLoadError: a model in models_dir is refused.
        FileNotFoundError: models_dir holds no .onnx file.
        ValueError: limit is below 1.
    """
    return evaluate_canvas_dirs([models_dir], limit=limit, seed=seed, workers=workers)[0]


def evaluate_canvas_dirs(
    models_dirs: Sequence, *, limit: int | None = None, seed: int = 0, workers: int | None = None
) -> list[dict]:
    """evaluate_canvas for each of models_dirs, the canvases rendered and preprocessed once for
    all: one report per directory, in order, each what evaluate_canvas gives for it (its
    seconds.render_and_preprocess is the shared pass's). Every directory's models are loaded
    before anything is rendered; raises what evaluate_canvas raises."""
    check_limit(limit)
    if not models_dirs:
        raise FileNotFoundError("no models directory to evaluate")
    workers = worker_count(workers)
    loaded = []
    for models_dir in models_dirs:
        paths = model_files(models_dir)
        if not paths:
            raise FileNotFoundError(f"{models_dir}: no .onnx models (run `flaxdigits export`)")
        loaded.append({p.name[: -len(".onnx")]: Predictor(p, threads=workers) for p in paths})
    digits, labels = load_test_digits(limit)
    n = len(digits)

    start = time.perf_counter()
    with worker_pool(workers) as pool:
        parts = list(pool.map(_render_and_preprocess, *_chunk_args(digits, chunks(n), seed)))
    images = {m: np.concatenate([p["images"][m] for p in parts]) for m in METHODS}
    failed = {m: np.concatenate([p["failed"][m] for p in parts]) for m in METHODS}
    render_s = time.perf_counter() - start
    raw_images = contract.scale_pixels(digits)  # (N, 28, 28) float32 in [0, 1]
    return [
        _report(predictors, images, failed, raw_images, labels, seed, render_s)
        for predictors in loaded
    ]


def _report(predictors, images, failed, raw_images, labels, seed: int, render_s: float) -> dict:
    """One directory's report from the shared canvases: its models predict them here."""
    start = time.perf_counter()
    by_method, raw, rejected = {}, {}, {}
    for name, predictor in predictors.items():
        raw[name] = accuracy(predictor.predict_batch(raw_images), labels)
        by_method[name], rejected[name] = {}, {}
        for m in METHODS:
            probs = predictor.predict_batch(images[m])
            by_method[name][m] = accuracy(probs, labels, failed[m])
            rejected[name][m] = not_a_digit_share(probs, predictor.answer_rule, failed[m])
    predict_s = time.perf_counter() - start

    report = {
        "schema": SCHEMA,
        "n": len(labels),
        "seed": seed,
        "canvas": {
            "side_px": CANVAS_SIDE,
            "digit_fraction": DIGIT_FRACTION,
            "blur_mnist_px": BLUR,
            "threshold": THRESHOLD,
            "transparent_share": TRANSPARENT,
        },
        "models": {name: str(p.path) for name, p in predictors.items()},
        # The bytes measured, per model: what a reader matches a file by (never its path).
        "sha256": {name: p.sha256 for name, p in predictors.items()},
        "accuracy": by_method,
        # Canvases the model's answer rule calls "not a digit" (null: a file without a rule).
        "not_a_digit": rejected,
        "test_accuracy_28x28": raw,
        "preprocessing_failures": {m: int(failed[m].sum()) for m in METHODS},
        "seconds": {"render_and_preprocess": round(render_s, 1), "predict": round(predict_s, 1)},
    }
    report["table"] = format_table(report)
    return report


def not_a_digit_share(probabilities: np.ndarray, rule, failed: np.ndarray) -> float | None:
    """Of the canvases preprocessing did not refuse, the share answered "not a digit"."""
    if rule is None:
        return None
    kept = probabilities[~failed].max(-1)
    answers = contract.answers(kept, rule)
    return round(float(np.mean(answers == "not a digit")) if len(answers) else 0.0, 6)


def _chunk_args(digits: np.ndarray, chunks: list[np.ndarray], seed: int):
    """pool.map argument columns: digit slices, their indices, the seed."""
    return [digits[c] for c in chunks], chunks, [seed] * len(chunks)


def format_table(report: dict) -> str:
    """The report's accuracies as a markdown table, one row per model."""
    header = ["model", "MNIST test (28x28)", *(f"canvas, `{m}`" for m in METHODS)]
    rows = [
        [name, _pct(report["test_accuracy_28x28"][name]), *(_pct(by_method[m]) for m in METHODS)]
        for name, by_method in report["accuracy"].items()
    ]
    return markdown_table(header, rows)


def _pct(accuracy: float) -> str:
    return f"{100 * accuracy:.2f}%"


def run(
    models_dir,
    out,
    *,
    limit: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    log: Callable[[str], object] = print,
):
    """`flaxdigits canvas-eval`: evaluate_canvas, write the report to `out` atomically, log the
    table and a summary line; returns the report. With a list of directories and one of as many
    reports, the canvases are rendered once (evaluate_canvas_dirs) and each report is written,
    logged and returned (a list) in turn. Raises what evaluate_canvas raises, and ValueError for
    lists of different lengths, before writing anything."""
    single = isinstance(models_dir, (str, os.PathLike))
    if single != isinstance(out, (str, os.PathLike)):
        raise ValueError("give one models directory and one report, or lists of each")
    dirs, outs = ([models_dir], [out]) if single else (list(models_dir), list(out))
    if len(dirs) != len(outs):
        raise ValueError(
            f"{len(dirs)} models directories but {len(outs)} reports: one report per directory"
        )
    if len({os.path.abspath(o) for o in outs}) != len(outs):
        raise ValueError("two models directories would write the same report")
    reports = evaluate_canvas_dirs(dirs, limit=limit, seed=seed, workers=workers)
    for report, target in zip(reports, outs, strict=True):
        path = write_json_atomic(target, report)
        seconds = report["seconds"]
        log(report["table"])
        log(
            f"{report['n']} canvases: render + preprocess {seconds['render_and_preprocess']} s"
            f"{' (shared)' if len(reports) > 1 else ''}, predict {seconds['predict']} s -> {path}"
        )
    return reports[0] if single else reports
