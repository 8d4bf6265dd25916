"""Milliseconds per training step of each recipe and model, for comparing two commits.

Times train()'s own compiled step loop (STEPS_PER_CALL steps a call, the recipe's batch,
augmentation, dropout and schedule) of whatever `flaxdigits` is importable, and prints JSON.
Run it alternately on two checkouts in one sitting (the older one through PYTHONPATH) and
compare the medians as ratios:

    PYTHONPATH=/path/to/old/checkout .venv/bin/python -m benchmarks.step_time --calls 6
    .venv/bin/python -m benchmarks.step_time --calls 6

It also reads the flat layout of commits before the package was split into layers
(2db3ba4 and earlier: flaxdigits.train, flaxdigits.steps, ...). A development script, not a test.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp


def _module(*names: str):
    """The first of names that imports: this layout's module or the flat layout's."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(f"none of {names}")


def step_ms(recipe: str, model: str, mnist, calls: int) -> float:
    """Median ms per step of the recipe's compiled step loop for model (first call: warm-up)."""
    config = _module("flaxdigits.training.config", "flaxdigits.config")
    train = _module("flaxdigits.training.train", "flaxdigits.train")
    mesh = _module("flaxdigits.training.mesh", "flaxdigits.mesh")
    steps = _module("flaxdigits.training.steps", "flaxdigits.steps")
    job = config.TrainConfig.for_recipe(recipe, model=model)
    setup = train.prepare(job, mnist, mesh.make_mesh(1))
    state = jax.device_put(setup.state, setup.replicated)
    compiled = train.compile_step_loop(setup, state)
    times = [call_seconds(setup, state, compiled, steps) for _ in range(calls + 1)]
    return 1e3 * statistics.median(times[1:])


def call_seconds(setup, state, compiled, steps) -> float:
    """Seconds per step of one call of a compiled step loop (train.compile_step_loop) from a
    copy of state over STEPS_PER_CALL steps of epoch 0; `steps` is the steps module."""
    split = setup.split
    leaves = [jnp.copy(x) for x in jax.tree.leaves(state)]
    sums = jax.device_put(jnp.zeros((2,), jnp.float32), setup.replicated)
    n = jax.device_put(jnp.int32(steps.STEPS_PER_CALL), setup.replicated)
    order = steps.epoch_order(state.rng, jnp.int32(0), int(split.train_images.shape[0]))
    jax.block_until_ready((leaves, sums, order))
    start = time.perf_counter()
    leaves, sums = compiled(leaves, sums, n, order, split.train_images, split.train_labels)
    jax.block_until_ready(sums)
    return (time.perf_counter() - start) / steps.STEPS_PER_CALL


def main(argv=None) -> int:
    """Time every (recipe, model) given; print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=6, help="timed calls of each step loop")
    ap.add_argument(
        "--jobs",
        nargs="+",
        default=["original/mlp", "original/cnn", "robust/mlp", "robust/cnn"],
        help="recipe/model pairs",
    )
    args = ap.parse_args(argv)
    data = _module("flaxdigits.data.mnist", "flaxdigits.data")
    mnist = data.load_mnist()
    out = {"machine": f"{platform.machine()}, {jax.local_devices()[0].device_kind}"}
    for job in args.jobs:
        recipe, model = job.split("/")
        out[job] = round(step_ms(recipe, model, mnist, args.calls), 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
