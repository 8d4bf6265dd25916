"""Probe of a lever not built yet: thin a drawing's strokes to MNIST's width before the model
reads it. A development script, not a test, and nothing served uses it.

The served CNN reads thick strokes less well (docs/experiments/2026-12-03-robust-cnn-recipe.md,
"What is not met: the thick strokes").
This measures what a stroke-width normalisation in the preprocessing could give, on the served
float CNN: each input is preprocessed the served way; its ink-box crop is scaled so that its
longer side is BOX px; the stroke half-width is estimated as the number of 3x3 erosions of the
thresholded ink until it is gone; a crop whose half-width exceeds the cut-off K is eroded (grey,
3x3 minimum) by the excess and preprocessed again. K is taken from the clean test digits'
half-widths (percentiles), so MNIST-like digits pass unchanged.

    .venv/bin/python -m benchmarks.stroke_norm_probe [--models models] [--n 5000] [--canvases 2000]

Prints one JSON object: per level (and on drawn canvases) the accuracy as served and with each
cut-off, and the share of inputs each cut-off changes.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from flaxdigits.data.mnist import load_mnist
from flaxdigits.evaluation.canvases import render_canvas
from flaxdigits.evaluation.distort import thickness
from flaxdigits.serve.runtime.predictor import Predictor
from flaxdigits.serve.runtime.preprocess import ImageInputError, preprocess

BOX = 80  # px: the crop's longer side when its strokes are measured (MNIST's 20 px box x 4)
LEVELS = (-0.5, 0.0, 1.0, 1.5, 1.75, 2.0, 2.5)  # px per stroke edge, as `flaxdigits robustness`
PERCENTILES = (90, 95, 99)


def _scaled_crop(canvas) -> np.ndarray:
    crop = preprocess(canvas).steps["cropped"]
    h, w = crop.shape
    s = BOX / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))


def _half_width(big: np.ndarray) -> int:
    mask = Image.fromarray(np.where(big >= 128, 255, 0).astype(np.uint8))
    mask = Image.fromarray(np.pad(np.asarray(mask), 1))  # so erosion reaches the box's edge
    k = 0
    while np.asarray(mask).any() and k < BOX:
        mask = mask.filter(ImageFilter.MinFilter(3))
        k += 1
    return k


def _eroded(big: np.ndarray, steps: int) -> np.ndarray:
    img = Image.fromarray(np.pad(big, 4))
    for _ in range(steps):
        img = img.filter(ImageFilter.MinFilter(3))
    return np.asarray(img)


def _work(job):
    """(inputs as served, half-widths, scaled crops) of one chunk of canvases."""
    kind, payload, seed = job
    served, widths, crops = [], [], []
    for i, item in enumerate(payload):
        canvas = (
            render_canvas(item, np.random.default_rng([seed, i]))
            if kind == "canvas"
            else thickness(item[0], float(item[1]))
        )
        try:
            served.append(preprocess(canvas).image)
            big = _scaled_crop(canvas)
        except ImageInputError:
            served.append(None)
            widths.append(-1)
            crops.append(None)
            continue
        widths.append(_half_width(big))
        crops.append(big)
    return served, widths, crops


def _normalised(crop: np.ndarray, width: int, cut: int) -> np.ndarray | None:
    if width <= cut:
        return None
    try:
        return preprocess(_eroded(crop, width - cut)).image
    except ImageInputError:
        return None


def _accuracy(predictor, images, labels) -> float:
    ok = [i for i, x in enumerate(images) if x is not None]
    if not ok:
        return 0.0
    p = predictor.predict_batch(np.stack([images[i] for i in ok])).argmax(1)
    return float((p == labels[ok]).sum() / len(labels))


def _chunks(items, n):
    return [items[i::n] for i in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--n", type=int, default=5000, help="test digits per level")
    ap.add_argument("--canvases", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    mnist = load_mnist()
    digits, labels = np.asarray(mnist.test_images), np.asarray(mnist.test_labels)
    predictor = Predictor(Path(args.models) / "cnn.onnx")
    sets = {f"thickness {lv:+g}": [(d, lv) for d in digits[: args.n]] for lv in LEVELS}
    sets["canvases"] = list(digits[: args.canvases])
    rendered = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for name, items in sets.items():
            kind = "canvas" if name == "canvases" else "thickness"
            order = [i for c in _chunks(list(range(len(items))), args.workers) for i in c]
            parts = list(pool.map(_work, [(kind, c, 7) for c in _chunks(items, args.workers)]))
            flat = [sum((list(p[k]) for p in parts), []) for k in range(3)]
            back = np.argsort(order)  # the chunks interleave: put each item back in place
            rendered[name] = [[f[j] for j in back] for f in flat]
    clean_widths = np.asarray([w for w in rendered["thickness +0"][1] if w >= 0])
    cuts = {p: int(np.percentile(clean_widths, p)) for p in PERCENTILES}
    out = {"n": args.n, "canvases": args.canvases, "box": BOX, "cut_offs": cuts, "levels": {}}
    for name, (served, widths, crops) in rendered.items():
        n = len(served)
        y = labels[:n]
        row = {"served": _accuracy(predictor, served, y)}
        for p, cut in cuts.items():
            changed = [
                None if c is None else _normalised(c, w, cut)
                for c, w in zip(crops, widths, strict=True)
            ]
            images = [s if ch is None else ch for ch, s in zip(changed, served, strict=True)]
            row[f"p{p} (k>{cut})"] = _accuracy(predictor, images, y)
            row[f"p{p} changed"] = sum(ch is not None for ch in changed) / n
        row["median half-width"] = float(np.median([w for w in widths if w >= 0]))
        out["levels"][name] = row
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
