"""Decode and preprocess corpus cases in isolation: time, memory and outcome of each (JSON)."""

import json
import resource
import sys
import time

import numpy as np
from PIL import Image

from flaxdigits.serve.runtime.decode import ImageInputError, load_image_file
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError, preprocess


def rss_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024


def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def huge(name):
    side = 4096
    rows = np.arange(side) * 40 // side
    grey = np.asarray(Image.open(sys.argv[2] + "/digit.png"))
    ink = grey[rows][:, rows] < 128  # (4096, 4096) bool
    alpha = np.where(ink, 255, 0).astype(np.uint8)
    return {
        "uint8 RGBA 4096x4096, ink in alpha": lambda: np.dstack(
            [np.zeros((side, side, 3), np.uint8), alpha]
        ),
        "float64 RGBA 4096x4096 [0, 1]": lambda: np.dstack(
            [np.where(ink, 0.0, 1.0)] * 3 + [np.ones((side, side))]
        ),
        "float32 4096x4096 [0, 255]": lambda: np.where(ink, 0, 255).astype(np.float32),
        "int64 4096x4096": lambda: np.where(ink, 0, 255).astype(np.int64),
        "bool 4096x4096": lambda: ~ink,
        "uint16 RGB 4096x4096": lambda: np.dstack([np.where(ink, 0, 65535)] * 3).astype(np.uint16),
        "uint8 16384x1024": lambda: np.where(ink.reshape(16384, 1024), 0, 255).astype(np.uint8),
        "uint8 1024x16384": lambda: np.where(ink.reshape(1024, 16384), 0, 255).astype(np.uint8),
        "uint8 1x16777216 (a side over the limit)": lambda: np.full(
            (side * side, 1), 255, np.uint8
        ),
        "uint8 4097x4096 (over the cap)": lambda: np.zeros((side + 1, side), np.uint8),
        "PIL RGBA 4096x4096": lambda: Image.fromarray(
            np.dstack([np.zeros((side, side, 3), np.uint8), alpha])
        ),
        "PIL I;16 4096x4096": lambda: Image.fromarray(np.where(ink, 0, 65535).astype(np.uint16)),
        "PIL F 4096x4096": lambda: Image.fromarray(np.where(ink, 0, 1).astype(np.float32)),
        "editor: background + 3 layers, 4096x4096, no composite": lambda: {
            "background": np.full((side, side, 3), 255, np.uint8),
            "layers": [np.dstack([np.zeros((side, side, 3), np.uint8), alpha])]
            + [np.zeros((side, side, 4), np.uint8)] * 2,
            "composite": None,
        },
    }[name]()


exact = reset_peak()
results = []
reference = preprocess(load_image_file(sys.argv[2] + "/digit.png")).image
for case in json.loads(sys.argv[1]):
    value = huge(case["huge"]) if "huge" in case else None
    before = rss_mb("VmRSS:")
    exact = reset_peak()
    start_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    try:
        if value is None:
            value = load_image_file(sys.argv[2] + "/" + case["file"])
        image = preprocess(value).image
        ok = (
            image.shape == (28, 28)
            and image.dtype == np.float32
            and bool(np.isfinite(image).all())
            and image.min() >= 0
            and image.max() <= 1
        )
        diff = float(np.abs(image - reference).mean())
        got, message = ("ok" if ok else "invalid output"), f"mean |diff| {diff:.3f}"
    except EmptyCanvasError as e:
        got, message = "empty", str(e)
    except ImageInputError as e:
        got, message = "error", str(e)
    except BaseException as e:
        got, message = "crash", f"{type(e).__name__}: {e}"
    elapsed = time.perf_counter() - t
    if exact:
        peak = rss_mb("VmHWM:")
    else:  # no clear_refs: the process-wide peak, an overestimate after a larger case
        peak = max(start_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    del value
    results.append(
        {
            **case,
            "got": got,
            "message": message[:300],
            "seconds": elapsed,
            "growth_mb": max(0.0, peak - before),
            "exact_rss": exact,
        }
    )
print(json.dumps(results))
