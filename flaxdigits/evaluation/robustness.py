"""Robustness of the served models to deformed digits: accuracy over a grid of rotations,
slants, stroke thicknesses, scales and shifts of the MNIST test digits.

    flaxdigits robustness --models models models/original --out reports/robustness.json
    flaxdigits robustness --models models models/original/mlp.onnx models/original/cnn.onnx

(a --models entry is a directory, every .onnx file in it, or one .onnx file.) Each test digit is
deformed on a canvas (evaluation/distort.py) and re-centred by the served `mnist` preprocessing, in
worker processes, once per (distortion, level, digit); as each distortion's images arrive, every
model predicts them a level (all its digits) at a time through its Predictor, while the workers
go on with the next distortion. Identical inputs give identical outputs, so a level whose model
inputs and refusals are byte for byte those of a level already scored (every distortion's
identity level; every translation, which the re-centring undoes exactly) reuses its scores
(keyed by the SHA-256 of those bytes): every level is still rendered and reported, and the
report is the one scoring each level afresh would give. The re-centring fits the
ink box to 20 px and centres its mass, as the page does with a drawing: it undoes translation
and most of scale, which measures what the served path does with them. A canvas the
preprocessing refuses as empty (a digit thinned away) is a wrong answer, and is counted.
Deterministic: no randomness, any worker count gives the same report. numpy, Pillow and
onnxruntime only.
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from flaxdigits.core import contract
from flaxdigits.core.atomic import write_json_atomic
from flaxdigits.core.tables import markdown_table
from flaxdigits.evaluation import digits as mnist_eval
from flaxdigits.evaluation.distort import CANVAS_SIDE, DISTORTIONS, SUPERSAMPLE, recentre
from flaxdigits.serve.runtime.predictor import Predictor, model_files
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError

SCHEMA = "flaxdigits.robustness.v1"
# Levels per distortion (distort.DISTORTIONS), each holding its identity level.
GRID: dict[str, tuple[float, ...]] = {
    "rotation": (-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0),
    "slant": (-0.4, -0.3, -0.15, 0.0, 0.15, 0.3, 0.4),
    "thickness": (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5),
    "scale": (0.6, 0.8, 1.0, 1.2, 1.4),
    "translation": (-8.0, -4.0, 0.0, 4.0, 8.0),
}
UNITS = {
    "rotation": "degrees, counter-clockwise",
    "slant": "shear: x += s * (y - centre)",
    "thickness": "pixels per stroke edge, 28x28 scale",
    "scale": "factor",
    "translation": "canvas pixels, (t, t): right and down",
}
# An export made before recipes existed was trained with the original recipe.
DEFAULT_RECIPE = "original"


def model_fields(predictor: Predictor) -> dict[str, str]:
    """What a model file is, from its metadata: model, recipe and variant."""
    meta = predictor.metadata
    variant = meta.get(contract.META_VARIANT)
    if not variant:
        variant = contract.variant_of(predictor.path.name)
    return {
        "model": predictor.name,
        "recipe": contract.recipe_name(meta.get(contract.META_RECIPE) or DEFAULT_RECIPE),
        "variant": variant,
    }


def _order(fields: Mapping[str, str]) -> tuple:
    """Report order: recipe, then model, then variant, as contract lists them."""

    def rank(value: str, known: Sequence[str]) -> tuple[int, str]:
        return (known.index(value) if value in known else len(known), value)

    return (
        rank(fields["recipe"], contract.RECIPE_NAMES),
        rank(fields["model"], contract.MODEL_NAMES),
        rank(fields["variant"], ("float32", "int8")),
    )


def _load(model_paths: Iterable) -> dict[str, tuple[Predictor, dict[str, str]]]:
    """{label "model/recipe/variant": (predictor, fields)} in report order."""
    loaded: dict[str, tuple[Predictor, dict[str, str]]] = {}
    for path in model_paths:
        # One thread each: the models predict side by side (_score), and while the workers
        # deform the next distortion's digits.
        predictor = Predictor(path, threads=1)
        fields = model_fields(predictor)
        label = "/".join(fields.values())
        if label in loaded:
            raise ValueError(
                f"{loaded[label][0].path} and {predictor.path} are both {label} "
                "(model/recipe/variant in their metadata): evaluate them in separate reports"
            )
        loaded[label] = (predictor, fields)
    return dict(sorted(loaded.items(), key=lambda item: _order(item[1][1])))


def _check_grid(grid: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """The grid as {distortion: [levels]}; unknown names or no levels raise ValueError."""
    unknown = sorted(set(grid) - set(DISTORTIONS))
    if unknown or not grid:
        raise ValueError(f"unknown distortions {unknown}: choose from {sorted(DISTORTIONS)}")
    empty = sorted(name for name, levels in grid.items() if not len(levels))
    if empty:
        raise ValueError(f"distortions without levels: {empty}")
    return {name: [float(v) for v in levels] for name, levels in grid.items()}


def render_levels(name: str, levels: Sequence[float], digits: np.ndarray):
    """Worker: the model inputs of the digits under each level of one distortion, (L, n, 28, 28)
    uint8, and which canvases the preprocessing refused as empty, (L, n) bool."""
    deform = DISTORTIONS[name]
    images = np.zeros((len(levels), len(digits), 28, 28), np.uint8)
    refused = np.zeros((len(levels), len(digits)), bool)
    for i, level in enumerate(levels):
        for j, digit in enumerate(digits):
            try:
                images[i, j] = recentre(deform(digit, level))
            except EmptyCanvasError:
                refused[i, j] = True
    return images, refused


def level_key(images: np.ndarray, refused: np.ndarray) -> bytes:
    """What a level's scores depend on besides the models and labels: the SHA-256 of its model
    inputs (n, 28, 28) uint8 and refusals (n,) bool, with their shapes."""
    digest = hashlib.sha256()
    for a in (np.ascontiguousarray(images, np.uint8), np.ascontiguousarray(refused, bool)):
        digest.update(repr(a.shape).encode())
        digest.update(a.tobytes())
    return digest.digest()


def _score(
    loaded,
    images: np.ndarray,
    refused: np.ndarray,
    labels: np.ndarray,
    known: dict,
    threads: ThreadPoolExecutor | None = None,
):
    """({label: accuracy per level}, {label: "not a digit" share per level}) of the models on
    images (L, N, 28, 28) uint8, a refused (L, N) image a wrong answer (and not counted in the
    share), and how many levels were scored (the others reused the scores in `known`,
    {level_key: {label: (accuracy, share)}}, which this extends). With `threads`, the models
    predict side by side, each in one thread of its own session as alone (the same numbers)."""
    scores: dict[str, list[float]] = {label: [] for label in loaded}
    shares: dict[str, list[float | None]] = {label: [] for label in loaded}
    scored = 0
    for level_images, level_refused in zip(images, refused, strict=True):
        key = level_key(level_images, level_refused)
        if key not in known:
            x = contract.scale_pixels(level_images)  # (N, 28, 28) float32 in [0, 1]
            known[key] = _accuracies(loaded, x, labels, level_refused, threads)
            scored += 1
        for label in loaded:
            scores[label].append(known[key][label][0])
            shares[label].append(known[key][label][1])
    return scores, shares, scored


def _accuracies(loaded, x: np.ndarray, labels: np.ndarray, refused, threads) -> dict:
    """{label: (accuracy, share answered "not a digit" or None without a rule)} of every model
    on the inputs x (N, 28, 28) float32."""

    def one(predictor: Predictor) -> tuple[float, float | None]:
        probs = predictor.predict_batch(x)
        kept = probs if refused is None else probs[~refused]
        rule = predictor.answer_rule
        share = None
        if rule is not None:
            answers = contract.answers(kept.max(-1), rule)
            share = float(np.mean(answers == "not a digit")) if len(answers) else 0.0
        return mnist_eval.accuracy(probs, labels, refused), share

    predictors = [predictor for predictor, _ in loaded.values()]
    found = threads.map(one, predictors) if threads else map(one, predictors)
    return dict(zip(loaded, found, strict=True))


def evaluate_robustness(
    model_paths: Iterable,
    *,
    limit: int | None = None,
    workers: int | None = None,
    log: Callable[[str], object] = print,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> dict:
    """Accuracy of every model on the MNIST test digits under each level of each distortion.

    Args:
        model_paths: exported .onnx files; each is labelled model/recipe/variant from its
            metadata (recipe "original" when absent).
        limit: use only the first `limit` test digits.
        workers: processes deforming and preprocessing (default: all cores).
        log: receives one progress line per distortion.
        grid: {distortion: levels}, default GRID.

    Returns:
        The report (schema SCHEMA): per model label its file, the sha256 of the bytes
        measured, its fields, the clean 28x28 test accuracy
        and accuracy[distortion] (one value per level of grid[distortion]), the refused
        canvases per level, n, seconds, the machine and a markdown table.

    Raises:
        ModelLoadError: a model file is refused.
        FileNotFoundError: no model paths.
        ValueError: limit below 1, a bad grid, or two files with the same label.
    """
    mnist_eval.check_limit(limit)
    grid = _check_grid(GRID if grid is None else grid)
    workers = mnist_eval.worker_count(workers)
    loaded = _load(model_paths)
    if not loaded:
        raise FileNotFoundError("no .onnx models to evaluate (run `flaxdigits export`)")
    digits, labels = mnist_eval.load_test_digits(limit)

    start = time.perf_counter()
    models, refused_counts, predict_s = _measure(loaded, grid, digits, labels, workers, log)
    report = {
        "schema": SCHEMA,
        "n": len(digits),
        "canvas": {"side_px": CANVAS_SIDE, "supersample": SUPERSAMPLE, "preprocess": "mnist"},
        "grid": {name: {"levels": levels, "unit": UNITS[name]} for name, levels in grid.items()},
        "models": models,
        "refused_empty": refused_counts,
        "seconds": {
            "total": round(time.perf_counter() - start, 1),
            "predict": round(predict_s, 1),
        },
        "machine": _machine(workers),
    }
    report["table"] = format_table(report)
    return report


def _measure(loaded, grid: dict[str, list[float]], digits, labels, workers: int, log):
    """Every model's report entry with its clean and per-level accuracies, the canvases refused
    as empty per level ({distortion: counts}), and the seconds spent predicting. Worker
    processes render the distortions in turn while the models predict the one before."""
    start = time.perf_counter()
    parts = mnist_eval.chunks(len(digits))
    tasks = [(name, part) for name in grid for part in parts]
    known: dict[bytes, dict] = {}  # level_key -> {label: (accuracy, not-a-digit share)}
    refused_counts: dict[str, list[int]] = {}
    # The models predict in this process, `workers` of them at a time (threads: onnxruntime
    # runs without the GIL), so that no core idles once the rendering is done.
    with mnist_eval.worker_pool(workers) as pool, ThreadPoolExecutor(workers) as threads:
        results = pool.map(  # submits every task now: the workers start while the clean run
            render_levels,
            [name for name, _ in tasks],
            [grid[name] for name, _ in tasks],
            [digits[part] for _, part in tasks],
        )
        tic = time.perf_counter()
        clean = contract.scale_pixels(digits)  # (N, 28, 28) float32 in [0, 1]
        models = _entries(loaded, _accuracies(loaded, clean, labels, None, threads))
        predict_s = time.perf_counter() - tic
        for name, levels in grid.items():  # results arrive in task order: a distortion at a time
            pieces = [next(results) for _ in parts]
            images = np.concatenate([p[0] for p in pieces], axis=1)  # (L, N, 28, 28) uint8
            refused = np.concatenate([p[1] for p in pieces], axis=1)  # (L, N)
            tic = time.perf_counter()
            by_label, shares, scored = _score(loaded, images, refused, labels, known, threads)
            for label, by_level in by_label.items():
                models[label]["accuracy"][name] = by_level
                models[label]["not_a_digit"][name] = shares[label]
            predict_s += time.perf_counter() - tic
            refused_counts[name] = [int(c) for c in refused.sum(axis=1)]
            reused = f", {len(levels) - scored} reused" if scored < len(levels) else ""
            log(
                f"{name}: {len(levels)} levels x {len(digits)} digits{reused} "
                f"({time.perf_counter() - start:.0f} s)"
            )
    return models, refused_counts, predict_s


def _entries(loaded, clean: dict[str, tuple]) -> dict[str, dict]:
    """{label: report entry} of every model: its file, the sha256 of the bytes measured (what a
    reader matches), its fields, clean accuracy and "not a digit" share (None: a file without an
    answer rule); both per distortion are filled in."""
    return {
        label: {
            "file": str(predictor.path),
            "sha256": predictor.sha256,
            **fields,
            "test_accuracy_28x28": clean[label][0],
            "not_a_digit_28x28": clean[label][1],
            "accuracy": {},
            "not_a_digit": {},
        }
        for label, (predictor, fields) in loaded.items()
    }


def _machine(workers: int) -> dict:
    """Where the report was measured."""
    import onnxruntime

    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "workers": workers,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
    }


def format_table(report: dict) -> str:
    """The report's accuracies as markdown: one table per distortion, a row per model, with
    the clean 28x28 accuracy first and a row of refused (empty) canvases where there are any."""
    blocks = []
    for name, spec in report["grid"].items():
        header = ["model", "clean 28x28", *(f"{v:g}" for v in spec["levels"])]
        rows = [
            [label, _pct(model["test_accuracy_28x28"]), *map(_pct, model["accuracy"][name])]
            for label, model in report["models"].items()
        ]
        refused = report["refused_empty"][name]
        if any(refused):
            rows.append(["refused as empty", "", *map(str, refused)])
        title = f"{name} ({spec['unit']}), {report['n']} test digits:"
        blocks.append(f"{title}\n\n{markdown_table(header, rows)}")
    return "\n\n".join(blocks)


def _pct(accuracy: float) -> str:
    return f"{100 * accuracy:.2f}%"


def run(
    models_dirs: Iterable,
    out,
    *,
    limit: int | None = None,
    workers: int | None = None,
    log: Callable[[str], object] = print,
) -> dict:
    """`flaxdigits robustness`: evaluate_robustness on every .onnx file in models_dirs (each a
    directory, all its .onnx files, or one .onnx file), write the report to `out` atomically,
    log the tables and a summary line; returns the report.

    Raises:
        FileNotFoundError: a directory or file is missing, or a directory holds no .onnx file.
        ValueError: a file that is not .onnx.
        And what evaluate_robustness raises.
    """
    paths = []
    for entry in map(Path, models_dirs):
        if entry.is_file():
            if entry.suffix != ".onnx":
                raise ValueError(f"{entry}: not an .onnx model file")
            paths.append(entry)
            continue
        if not entry.is_dir():
            what = "model file" if entry.suffix == ".onnx" else "models directory"
            raise FileNotFoundError(f"{entry}: no such {what}")
        found = model_files(entry)
        if not found:
            raise FileNotFoundError(f"{entry}: no .onnx models (run `flaxdigits export`)")
        paths += found
    report = evaluate_robustness(paths, limit=limit, workers=workers, log=log)
    path = write_json_atomic(out, report)
    log(report["table"])
    levels = sum(len(spec["levels"]) for spec in report["grid"].values())
    log(
        f"{report['n']} digits x {levels} distortion levels, {len(report['models'])} models: "
        f"{report['seconds']['total']} s (predict {report['seconds']['predict']} s) -> {path}"
    )
    return report
