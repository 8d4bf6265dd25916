"""Does a recipe make a model say "not a digit"? Train one model with or without the outlier
exposure of training/outliers.py and measure, in JAX: clean test accuracy, the temperature fitted
on the validation split, ECE before and after it on the test set, the "not a digit" threshold
that rejects REJECT of the validation digits, the share of test digits it rejects, and the AUROC
of the confidence (the largest probability) of test digits against the held-out non-digits of
flaxdigits/evaluation/nondigits.py, with the share of each held-out kind caught. A development
script (how docs/experiments/2026-12-05-not-a-digit.md was measured), not a test.

    .venv/bin/python -m benchmarks.nondigit_probe NAME [--model mlp] [--epochs 10]
        [--outliers SHARE WEIGHT | --no-outliers] [--seed 0] [--out build/nondigit]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
from flax import nnx

from flaxdigits.core import contract
from flaxdigits.data.mnist import load_mnist
from flaxdigits.evaluation import calibration, nondigits
from flaxdigits.runs import load_run
from flaxdigits.training import config as C
from flaxdigits.training.train import train

REJECT = 0.005  # of the validation digits: the threshold's quantile


def batched(forward, model, images: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """forward(model, x) (an nnx.jit function) over float (N, 28, 28) or uint8 images, as the
    model's (N, 28, 28, 1) float32 input, `chunk` at a time."""
    x = images if images.dtype != np.uint8 else contract.scale_pixels(images)
    x = np.asarray(x, np.float32)[..., None]
    return np.concatenate(
        [np.asarray(forward(model, x[i : i + chunk])) for i in range(0, len(x), chunk)]
    )


def logits_of(model, images: np.ndarray) -> np.ndarray:
    """Logits of float (N, 28, 28) or uint8 images, 1,000 at a time."""
    return batched(nnx.jit(lambda m, x: m(x)), model, images)


def score_figures(score: dict[str, np.ndarray], kinds=None) -> tuple[dict, np.ndarray]:
    """The figures of one score (larger: more like a digit) of the sets "val", "test", "other"
    (the held-out non-digits) and, if given, "canvas": the threshold rejecting REJECT of "val",
    the AUROC of test digits against the non-digits, the shares of test digits (and canvases)
    under the threshold, the share of non-digits caught (per kind, with their kinds); and the
    caught mask of the non-digits."""
    threshold = calibration.threshold_for(score["val"], REJECT)
    caught = score["other"] < threshold
    out = {
        "auroc": round(calibration.auroc(score["test"], score["other"]), 4),
        "test_rejected": round(100 * float((score["test"] < threshold).mean()), 2),
    }
    if "canvas" in score:
        out["canvas_rejected"] = round(100 * float((score["canvas"] < threshold).mean()), 2)
    out["caught"] = round(100 * float(caught.mean()), 1)
    if kinds is not None:
        out["caught_by_kind"] = {
            k: round(100 * float(caught[np.array(kinds) == k].mean()), 1)
            for k in sorted(set(kinds))
        }
    return out, caught


def measure(model, split, heldout) -> dict:
    """The figures of one trained model (see the module docstring)."""
    images, kinds, names = heldout
    val = logits_of(model, split.val_images)
    test = logits_of(model, split.test_images)
    other = logits_of(model, images)
    t = calibration.fit_temperature(val, split.val_labels)
    before = calibration.softmax(test)
    after = calibration.softmax(test, t)
    conf_val = calibration.softmax(val, t).max(-1)
    conf_test, conf_other = after.max(-1), calibration.softmax(other, t).max(-1)
    threshold = calibration.threshold_for(conf_val, REJECT)
    scores = {"val": conf_val, "test": conf_test, "other": conf_other}
    figures, caught = score_figures(scores, kinds)
    passed = sorted({names[i] for i in np.flatnonzero(~caught)})
    return {
        "test": round(100 * float((test.argmax(-1) == split.test_labels).mean()), 2),
        "temperature": round(t, 3),
        "ece_before": round(100 * calibration.reliability(before, split.test_labels)["ece"], 2),
        "ece_after": round(100 * calibration.reliability(after, split.test_labels)["ece"], 2),
        "threshold": round(threshold, 4),
        "test_rejected": figures["test_rejected"],
        "auroc": figures["auroc"],
        "heldout_caught": figures["caught"],
        "caught_by_kind": figures["caught_by_kind"],
        "passed_as_digits": passed[:40],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--model", default="mlp", choices=contract.MODEL_NAMES)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--outliers", nargs=2, type=float, metavar=("SHARE", "WEIGHT"))
    parser.add_argument("--no-outliers", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("build/nondigit"))
    args = parser.parse_args(argv)
    recipe = C.RECIPES["robust"][args.model]
    if args.no_outliers:
        recipe = dataclasses.replace(recipe, outliers=None)
    elif args.outliers:
        recipe = dataclasses.replace(recipe, outliers=C.Outliers(*args.outliers))
    C.RECIPES["robust"][args.model] = recipe  # this process's recipe: the variant
    cfg = C.TrainConfig.for_recipe("robust", model=args.model, seed=args.seed, epochs=args.epochs)
    mnist = load_mnist("auto", log=lambda _: None)
    heldout = nondigits.heldout_inputs()
    row = {"name": args.name, "model": args.model, "epochs": cfg.epochs, "seed": args.seed}
    row["outliers"] = recipe.outliers.to_dict() if recipe.outliers else None
    record(row | train_and_measure(cfg, args.out / "runs" / args.name, mnist, heldout), args.out)
    return 0


def train_and_measure(cfg, run_dir: Path, mnist, heldout, during=contextlib.nullcontext) -> dict:
    """Train cfg into run_dir (replaced) inside the context `during()`, then measure it:
    {"train_seconds", ...measure()}."""
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    with during():
        train(cfg, run_dir, data=mnist, tensorboard=False, log=lambda _: None)
    seconds = time.perf_counter() - start
    run = load_run(run_dir)
    return {"train_seconds": round(seconds)} | measure(run.model, run.split(mnist), heldout)


def record(row: dict, out: Path) -> None:
    """Print the row and append it to out/results.jsonl."""
    print(json.dumps(row))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
