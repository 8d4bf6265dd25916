"""Where the original recipe's CNN step (batch 32) spends its time, against the 3x-floor budget
of issue 31: each part timed alone inside a jitted lax.fori_loop, as the trainer runs its steps.

Parts (float32, the recipe's shapes): the hidden Dense layer's three GEMMs (forward x @ W,
weight gradient x^T @ dy, input gradient dy @ W^T: 32 x 5408 x 100 each), Adam's update of all
542,230 parameters, and the conv + max-pool forward and backward in each of models/conv_pool.py's
kernels; beside them the whole step (benchmarks/step_time.py). The floor per step is the
epoch's training FLOPs (`flaxdigits.models.train_flops_per_image`) at the machine's 1024^2
float32 matmul rate, over the epoch's steps; the budget is 3x that. Each loop body depends on
the previous iteration's result, so XLA cannot hoist the work out of the loop. A development
script, not a test.

    .venv/bin/python -m benchmarks.seed_step_parts [--steps 500] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from benchmarks.bench.machine import matmul_gflops
from benchmarks.step_time import step_ms
from flaxdigits.data.mnist import load_mnist
from flaxdigits.models import create_model, train_flops_per_image
from flaxdigits.models.conv_pool import KERNELS
from flaxdigits.training import config as C

BATCH = 32
TRAIN_IMAGES = 54_000


def loop_ms(body, carry, steps: int, repeats: int) -> float:
    """Median ms per iteration of `steps` iterations of body(carry) -> carry in one fori_loop."""
    run = jax.jit(lambda c: jax.lax.fori_loop(0, steps, lambda _, c: body(c), c))
    jax.block_until_ready(run(carry))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(carry))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times) / steps


def dense_gemms(key):
    """The hidden layer's forward and two backward GEMMs; the weight moves each iteration."""
    kx, kw, kd = jax.random.split(key, 3)
    x = jax.random.normal(kx, (BATCH, 5408))
    dy = jax.random.normal(kd, (BATCH, 100))

    def body(c):
        w, acc = c
        g = dy + 1e-6 * (x @ w)  # the backward GEMMs need the forward's output
        return w - 1e-9 * (x.T @ g), acc + (g @ w.T)[0, 0]

    return body, (jax.random.normal(kw, (5408, 100)) * 0.01, jnp.float32(0))


def adam_update():
    """optax.adam's update and apply over the CNN's parameters, a gradient per iteration."""
    params = nnx.state(create_model("cnn", 0), nnx.Param)
    opt = optax.adam(1e-3)

    def body(c):
        p, s = c
        g = jax.tree.map(lambda v: 1e-3 * v + 1e-4, p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    return body, (params, opt.init(params))


def conv_pool(key, kernel_name: str):
    """The conv + pool forward and the kernel's gradient at batch 32."""
    fn = KERNELS[kernel_name]
    kx, kk = jax.random.split(key)
    x = jax.random.uniform(kx, (BATCH, 28, 28, 1))

    def body(c):
        k, acc = c
        y, vjp = jax.vjp(lambda k: fn(x, k), k)
        (dk,) = vjp(jnp.ones_like(y) * 1e-3)
        return k - 1e-6 * dk, acc + y[0, 0, 0, 0]

    return body, (jax.random.normal(kk, (3, 3, 1, 32)) * 0.1, jnp.float32(0))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    key = jax.random.PRNGKey(0)
    rate = max(matmul_gflops() for _ in range(3))
    steps_per_epoch = TRAIN_IMAGES // BATCH
    floor_ms = 1e3 * TRAIN_IMAGES * train_flops_per_image("cnn") / (rate * 1e9) / steps_per_epoch
    out = {
        "matmul_gflops": round(rate, 1),
        "floor_ms_per_step": round(floor_ms, 3),
        "budget_ms_per_step (3x floor)": round(3 * floor_ms, 3),
        "dense_gemms_ms": round(loop_ms(*dense_gemms(key), args.steps, args.repeats), 3),
        "adam_ms": round(loop_ms(*adam_update(), args.steps, args.repeats), 3),
    }
    for name in KERNELS:
        out[f"conv_pool_{name}_ms"] = round(
            loop_ms(*conv_pool(key, name), args.steps, args.repeats), 3
        )
    recipe = C.RECIPES["original"]["cnn"]
    out[f"whole_step_ms ({recipe.conv_pool})"] = round(
        step_ms("original", "cnn", load_mnist("auto", log=lambda _: None), 4), 3
    )
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
