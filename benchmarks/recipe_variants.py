"""Variants of a training recipe, side by side: train one model with one or more recipe values
changed, then read the full MNIST test set clean and under the robustness grid's key
distortions. How docs/experiments/2026-12-03-robust-cnn-recipe.md was measured. A development
script, not a test: a 40-epoch robust CNN takes 2-8 minutes on a 2-core CPU, depending on the load.

    .venv/bin/python -m benchmarks.recipe_variants NAME [--model cnn] [--recipe robust]
        [--set augment.elastic=2.0] [--set batch_size=64] [--set config.val_fraction=0] [--seed 1]

--set KEY=VALUE (JSON value; repeatable) changes the recipe: `augment.FIELD` one of its
augmentation's values, `FIELD` one of the recipe's (epochs, batch_size, learning_rate, ...;
`outliers` a JSON object of Outliers' fields),
`config.FIELD` one of the training job's (val_fraction, ...). The run goes to OUT/runs/NAME
(replaced); one JSON line per variant is printed and appended to OUT/results.jsonl, with the
"not a digit" figures of benchmarks/nondigit_probe.py (temperature, test digits rejected, AUROC
against the held-out non-digits, their share caught).

The distorted test digits are rendered once by the robustness report's renderer
(flaxdigits.evaluation.distort, the served `mnist` re-centring; a refused canvas is a wrong answer)
and cached in OUT/levels-DIGEST.npz, DIGEST naming the levels. The trained model reads them in
JAX (the exported float model gives the same answers to within its parity tolerance).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks import nondigit_probe
from flaxdigits.core import contract
from flaxdigits.data.mnist import load_mnist
from flaxdigits.evaluation import nondigits, robustness
from flaxdigits.runs import load_run
from flaxdigits.training import config as C
from flaxdigits.training.train import train

# (distortion, level): the acceptance levels of the robust recipe, and the thick end between.
LEVELS = (
    ("thickness", 0.0),  # the renderer's identity: clean, through the same path
    ("rotation", -30.0),
    ("rotation", 30.0),
    ("rotation", -45.0),
    ("rotation", 45.0),
    ("slant", -0.3),
    ("slant", 0.3),
    ("thickness", -0.5),
    ("thickness", 1.5),
    ("thickness", 1.75),
    ("thickness", 2.0),
    ("thickness", 2.5),
)


def rendered_levels(digits: np.ndarray, out: Path, workers: int = 2) -> dict[str, np.ndarray]:
    """{'name:level': inputs, 'name:level:refused': refusals} for LEVELS, cached in out."""
    digest = hashlib.sha256(repr((LEVELS, len(digits))).encode()).hexdigest()[:12]
    path = out / f"levels-{digest}.npz"
    if path.exists():
        with np.load(path) as cached:
            return dict(cached)
    levels: dict[str, np.ndarray] = {}
    parts = np.array_split(np.arange(len(digits)), 4 * workers)
    with ProcessPoolExecutor(workers) as pool:
        for name, level in LEVELS:
            # the robustness report's own worker, one level: (1, n, 28, 28) and (1, n) per chunk
            columns = ([name] * len(parts), [[level]] * len(parts), [digits[p] for p in parts])
            chunks = list(pool.map(robustness.render_levels, *columns))
            levels[f"{name}:{level}"] = np.concatenate([c[0][0] for c in chunks])
            levels[f"{name}:{level}:refused"] = np.concatenate([c[1][0] for c in chunks])
    partial = path.with_suffix(".partial.npz")
    np.savez_compressed(partial, **levels)
    partial.replace(path)
    return levels


def variant_recipe(recipe: C.Recipe, changes: dict[str, object]) -> tuple[C.Recipe, dict]:
    """The recipe with its `FIELD` / `augment.FIELD` changes, and the `config.FIELD` ones."""
    own, augment, job = {}, {}, {}
    for key, value in changes.items():
        scope, _, field = key.rpartition(".")
        {"": own, "augment": augment, "config": job}[scope][field] = value
    if isinstance(own.get("outliers"), dict):  # --set outliers='{"share": 0.125, ...}'
        own["outliers"] = C.Outliers(**own["outliers"])
    if augment:
        if recipe.augment is None:
            raise SystemExit("this recipe has no augmentation to change")
        own["augment"] = dataclasses.replace(recipe.augment, **augment)
    return dataclasses.replace(recipe, **own), job


def accuracy(model, images: np.ndarray, labels: np.ndarray, refused: np.ndarray) -> float:
    """Share of digits read right; a refused canvas is wrong."""
    predict = nnx.jit(lambda m, x: jnp.argmax(m(x), -1))
    x = contract.scale_pixels(images)[..., None]
    found = np.concatenate(
        [np.asarray(predict(model, x[i : i + 1000])) for i in range(0, len(x), 1000)]
    )
    return float(np.mean((found == labels) & ~refused))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--model", default="cnn", choices=contract.MODEL_NAMES)
    parser.add_argument("--recipe", default="robust", choices=sorted(C.RECIPES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("build/variants"))
    args = parser.parse_args(argv)
    changes = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    recipe, job = variant_recipe(C.RECIPES[args.recipe][args.model], changes)
    C.RECIPES[args.recipe][args.model] = recipe  # this process's recipe: the variant
    cfg = C.TrainConfig.for_recipe(args.recipe, model=args.model, seed=args.seed, **job)

    args.out.mkdir(parents=True, exist_ok=True)
    mnist = load_mnist("auto", log=lambda _: None)
    levels = rendered_levels(mnist.test_images, args.out)
    run_dir = args.out / "runs" / args.name
    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    metrics = train(cfg, run_dir, data=mnist, tensorboard=False, log=lambda _: None)
    seconds = time.perf_counter() - start
    run = load_run(run_dir)
    model = run.model
    labels = np.asarray(mnist.test_labels)
    last = metrics["history"][-1]
    row = {
        "name": args.name,
        "model": args.model,
        "recipe": args.recipe,
        "changes": changes,
        "seed": args.seed,
        "train_seconds": round(seconds),
        "val": round(100 * last["val_accuracy"], 2) if "val_accuracy" in last else None,
        "test": round(100 * metrics["test_accuracy"], 2),
    }
    for name, level in LEVELS:
        key = f"{name}:{level}"
        row[key] = round(100 * accuracy(model, levels[key], labels, levels[key + ":refused"]), 2)
    # "not a digit": the calibrated threshold's rejections and the AUROC against the held-out
    # non-digits (benchmarks/nondigit_probe.py), whatever the recipe
    answers = nondigit_probe.measure(model, run.split(mnist), nondigits.heldout_inputs())
    row |= {k: answers[k] for k in ("temperature", "test_rejected", "auroc", "heldout_caught")}
    print(json.dumps(row))
    with open(args.out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
