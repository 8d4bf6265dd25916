"""Outlier exposure as a fine-tune: start from a trained robust run's parameters and train a few
more epochs with non-digits beside the digits (Hendrycks et al.'s own setting), then measure as
benchmarks/nondigit_probe.py does. A development script
(docs/experiments/2026-12-05-not-a-digit.md), not part of any recipe: the fresh optimizer state
and the short schedule are this script's.

    .venv/bin/python -m benchmarks.outlier_finetune RUN_DIR NAME [--epochs 5] [--lr 3e-4]
        [--weight 0.5] [--share 0.125] [--kinds letter blob pair] [--out build/nondigit]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from pathlib import Path

from benchmarks.nondigit_probe import record, train_and_measure
from flaxdigits import models
from flaxdigits.data.mnist import load_mnist
from flaxdigits.evaluation import nondigits
from flaxdigits.runs import load_run
from flaxdigits.training import config as C


@contextlib.contextmanager
def from_trained(model):
    """Training starts from `model`'s parameters instead of a fresh initialisation (init_state
    builds the model through models.create_model); load_run, after, builds it freshly again."""
    fresh = models.create_model
    models.create_model = lambda *_a, **_k: model
    try:
        yield
    finally:
        models.create_model = fresh


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the trained robust run to start from")
    parser.add_argument("name")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight", type=float, default=0.5)
    parser.add_argument("--share", type=float, default=0.125)
    parser.add_argument("--kinds", nargs="+", default=list(C.OUTLIER_KINDS))
    parser.add_argument("--out", type=Path, default=Path("build/nondigit"))
    args = parser.parse_args(argv)
    start_run = load_run(args.run)
    name = start_run.config.model
    recipe = C.RECIPES["robust"][name]
    outliers = C.Outliers(args.share, args.weight, tuple(args.kinds))
    C.RECIPES["robust"][name] = dataclasses.replace(recipe, outliers=outliers, warmup_epochs=0.5)
    cfg = C.TrainConfig.for_recipe(
        "robust", model=name, seed=start_run.config.seed, epochs=args.epochs, learning_rate=args.lr
    )
    mnist = load_mnist("auto", log=lambda _: None)
    heldout = nondigits.heldout_inputs()
    row = {"name": args.name, "from": str(args.run), "epochs": args.epochs, "lr": args.lr}
    row["outliers"] = outliers.to_dict()
    row |= train_and_measure(
        cfg, args.out / "runs" / args.name, mnist, heldout, lambda: from_trained(start_run.model)
    )
    record(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
