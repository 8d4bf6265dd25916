"""Mixed precision on this machine: the training step in float32 against bfloat16, the step's
parts in each, and the test accuracy each reaches. A development script, not a test.

    .venv/bin/python -m benchmarks.precision steps [--calls 9]      # ms per step, both recipes
    .venv/bin/python -m benchmarks.precision parts [--calls 15]     # where a step's time goes
    .venv/bin/python -m benchmarks.precision gemms [--calls 15]     # the step's GEMMs and casts
    .venv/bin/python -m benchmarks.precision accuracy [--seeds 0 1 2] [--epochs 5]

steps, parts and gemms alternate between the float32 and bfloat16 executables call by call, so
that a neighbour's load on a shared machine hits both alike; the medians (after a warm-up round)
and the median of the per-round ratios are printed as JSON. accuracy trains the 'original'
recipe's models per seed in both precisions and prints each run's test accuracy and the mean
difference.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flaxdigits.core.contract import MODEL_NAMES
from flaxdigits.data.mnist import load_mnist
from flaxdigits.models import conv_pool, create_model, layers
from flaxdigits.training import mesh, steps
from flaxdigits.training.config import PRECISIONS, RECIPES, TrainConfig
from flaxdigits.training.evaluate import loss_and_logits
from flaxdigits.training.train import compile_step_loop, prepare, train

ACCURACY_RECIPE = "original"
# Steps per timed call of the compiled step loop: short calls, many of them, alternating (a
# multiple of the augmentation group).
STEPS = 24
REPEAT = 10  # calls of a part per timed call


def _rounds(calls: int, runners: dict) -> dict[object, list[float]]:
    """{label: seconds of each call of runner()} over `calls` rounds, one call of each runner
    per round, after a warm-up round (dropped)."""
    times: dict = {label: [] for label in runners}
    for _ in range(calls + 1):
        for label, run in runners.items():
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return {label: t[1:] for label, t in times.items()}


def _compare(f32: list[float], bf16: list[float], per: float = 1.0) -> dict[str, float]:
    """Median ms (per `per` units) of each, and the median over rounds of bfloat16 / float32 in
    the same round: a shared machine's load, drifting, hits both alike."""
    ratios = [b / a for a, b in zip(f32, bf16, strict=True)]
    return {
        "float32": round(1e3 * statistics.median(f32) / per, 3),
        "bfloat16": round(1e3 * statistics.median(bf16) / per, 3),
        "bfloat16_over_float32": round(statistics.median(ratios), 3),
    }


def _step_loop_runner(job: TrainConfig, mnist):
    """A function that runs STEPS of the job's compiled training steps (train()'s executable)
    from the same fresh state each time."""
    setup = prepare(job, mnist, mesh.make_mesh(1))
    state = jax.device_put(setup.state, setup.replicated)
    compiled = compile_step_loop(setup, state)
    split = setup.split
    n = jax.device_put(jnp.int32(STEPS), setup.replicated)
    order = steps.epoch_order(state.rng, jnp.int32(0), int(split.train_images.shape[0]))

    def run():
        leaves = [jnp.copy(x) for x in jax.tree.leaves(state)]  # the call donates them
        sums = jax.device_put(jnp.zeros((2,), jnp.float32), setup.replicated)
        jax.block_until_ready(leaves)
        out = compiled(leaves, sums, n, order, split.train_images, split.train_labels)
        jax.block_until_ready(out)

    return run


def step_ms(mnist, calls: int) -> dict:
    """ms per training step of each recipe and model in each precision, and bfloat16 / float32
    (the copy of the fresh state each call makes is in both: ~0.01 ms a step)."""
    out = {}
    for recipe, models in RECIPES.items():
        for model in models:
            runners = {
                p: _step_loop_runner(
                    TrainConfig.for_recipe(recipe, model=model, precision=p), mnist
                )
                for p in PRECISIONS
            }
            times = _rounds(calls, runners)
            row = _compare(times["float32"], times["bfloat16"], per=STEPS)
            out[f"{recipe}/{model}"] = row
            print(f"{recipe}/{model}: {row}", flush=True)
    return out


def _part_functions(model: str, batch: int, dtype) -> dict:
    """Jitted parts of a training step of `model` at `batch` in `dtype` (float32 parameters and
    images cast to it as train_step does): forward+backward (the gradient of the loss), the Adam
    update (float32 in both), and for the CNN its conv+pool alone and its hidden Dense alone
    (forward+backward each). A forward alone is not the training one: conv_max_pool's fast
    forward runs only under autodiff."""
    graphdef, params = nnx.split(create_model(model, seed=0), nnx.Param)
    images = jax.random.uniform(jax.random.PRNGKey(0), (batch, 28, 28, 1))
    labels = jax.random.randint(jax.random.PRNGKey(1), (batch,), 0, 10)
    loss = functools.partial(loss_and_logits, graphdef, compute_dtype=dtype)
    grad = jax.jit(jax.grad(lambda p: loss(p, images, labels)[0]))
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)
    parts = {
        "forward+backward": functools.partial(grad, params),
        "adam update": functools.partial(jax.jit(tx.update), grad(params), opt_state, params),
    }
    if model == "cnn":
        x, kernel = images.astype(dtype), params["conv"]["kernel"][...].astype(dtype)
        conv = jax.jit(jax.grad(lambda k: conv_pool.conv_max_pool(x, k).astype(jnp.float32).sum()))
        parts["conv_max_pool fwd+bwd"] = functools.partial(conv, kernel)
        h = jax.random.uniform(jax.random.PRNGKey(2), (batch, 5408), dtype)
        w = params["hidden"]["kernel"][...].astype(dtype)
        matmul = layers.mixed_matmul if dtype != jnp.float32 else jnp.matmul
        dense = jax.jit(jax.grad(lambda w, h: matmul(h, w).astype(jnp.float32).sum(), (0, 1)))
        parts["hidden dense fwd+bwd"] = functools.partial(dense, w, h)
    return parts


def _repeat(fn):
    """A runner that calls fn REPEAT times and waits for the last result."""

    def run():
        for _ in range(REPEAT):
            out = fn()
        jax.block_until_ready(out)

    return run


def parts_ms(calls: int) -> dict:
    """ms of each part of the step, both precisions alternating, at each recipe's batch size."""
    out = {}
    for model in MODEL_NAMES:
        for batch in sorted({r[model].batch_size for r in RECIPES.values()}):
            fns = {p: _part_functions(model, batch, jnp.dtype(p)) for p in PRECISIONS}
            runners = {
                (part, p): _repeat(fns[p][part]) for part in fns["float32"] for p in PRECISIONS
            }
            times = _rounds(calls, runners)
            for part in fns["float32"]:
                row = _compare(times[(part, "float32")], times[(part, "bfloat16")], per=REPEAT)
                out[f"{model}/b{batch}/{part}"] = row
                print(f"{model}/b{batch}/{part}: {row}", flush=True)
    return out


def _gemm_shapes(batch: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], str]]:
    """{name: (a shape, b shape, layout)} of the products of a step at `batch`: layout "nn" is
    a @ b, "tn" a.T @ b, "nt" a @ b.T (as the gradients use them)."""
    n = 4 * batch * 13 * 13  # conv_max_pool's rows: 4 window positions x B x 13 x 13
    return {
        "mlp hidden x@W (K=784)": ((batch, 784), (784, 128), "nn"),
        "cnn hidden x@W (K=5408)": ((batch, 5408), (5408, 100), "nn"),
        "cnn hidden dW = x.T@g (K=B)": ((batch, 5408), (batch, 100), "tn"),
        "cnn hidden dx = g@W.T (K=100)": ((batch, 100), (5408, 100), "nt"),
        "conv patches@kernel (K=9)": ((n, 9), (9, 32), "nn"),
        "conv dkernel = patches.T@g (K=4*B*169)": ((n, 9), (n, 32), "tn"),
    }


def _gemm(layout: str, dtype):
    """The product in `layout`, float32 results; dtype "bfloat16->bfloat16" asks for a bfloat16
    result instead (what a plain bfloat16 @ gives)."""
    to_f32 = dtype != "bfloat16->bfloat16"
    kwargs = {"preferred_element_type": jnp.float32} if to_f32 else {}

    def product(a, b):
        a, b = (a.T, b) if layout == "tn" else (a, b.T) if layout == "nt" else (a, b)
        return jnp.matmul(a, b, **kwargs)

    return jax.jit(product)


def gemms_ms(calls: int) -> dict:
    """ms of each GEMM of the steps (both batches) with float32 and bfloat16 operands (float32
    sums), of a bfloat16 product with a bfloat16 result, and of casting the CNN's hidden kernel
    to bfloat16 (what every bfloat16 step does to its parameters)."""
    out = {}
    for batch in (32, 128):
        runners = {}
        for name, (a_shape, b_shape, layout) in _gemm_shapes(batch).items():
            a = jax.random.normal(jax.random.PRNGKey(0), a_shape)
            b = jax.random.normal(jax.random.PRNGKey(1), b_shape)
            for p in PRECISIONS:
                args = (a.astype(p), b.astype(p))
                runners[(name, p)] = _repeat(functools.partial(_gemm(layout, p), *args))
            if layout == "nn":
                bf = (a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
                runners[(name, "bf16->bf16")] = _repeat(
                    functools.partial(_gemm(layout, "bfloat16->bfloat16"), *bf)
                )
        kernel = jax.random.normal(jax.random.PRNGKey(2), (5408, 100))
        cast = jax.jit(lambda k: k.astype(jnp.bfloat16))
        runners[("cast 5408x100 to bfloat16", "bfloat16")] = _repeat(
            functools.partial(cast, kernel)
        )
        runners[("cast 5408x100 to bfloat16", "float32")] = _repeat(
            functools.partial(jax.jit(lambda k: k * 2.0), kernel)  # the same pass, no cast
        )
        times = _rounds(calls, runners)
        for name in dict.fromkeys(n for n, _ in runners):
            row = _compare(times[(name, "float32")], times[(name, "bfloat16")], per=REPEAT)
            if (name, "bf16->bf16") in times:
                row["bfloat16_to_bfloat16"] = round(
                    1e3 * statistics.median(times[(name, "bf16->bf16")]) / REPEAT, 3
                )
            out[f"b{batch}/{name}"] = row
            print(f"b{batch}/{name}: {row}", flush=True)
    return out


def accuracy(mnist, seeds: list[int], epochs: int) -> dict:
    """Test accuracy of the ACCURACY_RECIPE's models per seed in each precision, and the mean
    bfloat16 - float32 difference in points."""
    out = {}
    for model in MODEL_NAMES:
        row: dict = {p: {} for p in PRECISIONS}
        for seed in seeds:
            for p in PRECISIONS:
                job = TrainConfig.for_recipe(
                    ACCURACY_RECIPE, model=model, seed=seed, epochs=epochs, precision=p
                )
                with tempfile.TemporaryDirectory() as tmp:
                    m = train(
                        job, Path(tmp) / "run", data=mnist, progress=False, log=lambda _: None
                    )
                row[p][seed] = m["test_accuracy"]
                print(f"{model} seed {seed} {p}: {m['test_accuracy']:.4f}", flush=True)
        means = {p: statistics.mean(row[p].values()) for p in PRECISIONS}
        row["mean"] = means
        row["bfloat16_minus_float32_points"] = round(
            100 * (means["bfloat16"] - means["float32"]), 3
        )
        out[f"{ACCURACY_RECIPE}/{model}"] = row
    return out


def main(argv=None) -> int:
    """Run one measurement; print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("steps", "parts", "gemms", "accuracy"))
    ap.add_argument("--calls", type=int, default=9, help="timed calls per variant")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    args = ap.parse_args(argv)
    out: dict = {"machine": f"{platform.processor() or platform.machine()}, {jax.devices()[0]}"}
    if args.what == "steps":
        out["ms_per_step"] = step_ms(load_mnist(), args.calls)
    elif args.what == "parts":
        out["ms_per_part"] = parts_ms(args.calls)
    elif args.what == "gemms":
        out["ms_per_gemm"] = gemms_ms(args.calls)
    else:
        out["test_accuracy"] = accuracy(load_mnist(), args.seeds, args.epochs)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
