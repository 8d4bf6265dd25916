"""Issue 32 screening: check the residual net's im2col conv against lax.conv (values and
gradients), and time a full Adam step inside a lax.fori_loop (as the trainer runs it).

    FLAXDIGITS_RESNET=c1=16,c2=32 .venv/bin/python -m benchmarks.resnet_check
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flaxdigits.models import count_params, create_model
from flaxdigits.models.resnet import _lax_conv, conv


def check_conv() -> None:
    rng = np.random.default_rng(0)
    for shape, k, stride, pad in [
        ((4, 13, 13, 16), (3, 3, 16, 32), 2, 1),
        ((4, 13, 13, 16), (3, 3, 16, 16), 1, 1),
        ((4, 13, 13, 16), (1, 1, 16, 32), 2, 0),
        ((4, 28, 28, 1), (3, 3, 1, 16), 1, 1),
    ]:
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        w = jnp.asarray(rng.normal(size=k), jnp.float32)
        g = jnp.asarray(rng.normal(size=_lax_conv(x, w, stride, pad).shape), jnp.float32)
        ref = jax.vjp(lambda a, b: _lax_conv(a, b, stride, pad), x, w)
        got = jax.vjp(lambda a, b: conv(a, b, stride, pad), x, w)
        err_y = float(jnp.max(jnp.abs(ref[0] - got[0])))
        err_g = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(ref[1](g), got[1](g))]
        print(f"conv {shape} k{k} s{stride} p{pad}: max|dy| {err_y:.2e} max|dgrad| {err_g}")
        assert err_y < 1e-4 and max(err_g) < 1e-3


def time_step(batch: int = 128, steps: int = 50, name: str = "resnet", repeats: int = 1) -> float:
    """Seconds per plain Adam step (no augmentation, no dropout) inside one lax.fori_loop."""
    model = create_model(name)
    print(name, "params", count_params(model))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(1e-3)
    opt = tx.init(params)
    x = jax.random.uniform(jax.random.key(0), (steps, batch, 28, 28, 1))
    y = jax.random.randint(jax.random.key(1), (steps, batch), 0, 10)

    def loss(p, xb, yb):
        logits = nnx.merge(graphdef, p)(xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def run(p, o):
        def body(i, c):
            p, o = c
            g = jax.grad(loss)(p, x[i], y[i])
            u, o = tx.update(g, o, p)
            return optax.apply_updates(p, u), o

        return jax.lax.fori_loop(0, steps, body, (p, o))

    jax.block_until_ready(run(params, opt))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(run(params, opt))
        best = min(best, (time.perf_counter() - t) / steps)
    print(f"{name} step in fori_loop, batch {batch}: {1000 * best:.1f} ms (best of {repeats}); "
          f"epoch of {54000 // batch} steps ~ {best * (54000 // batch):.1f} s (no augmentation)")
    return best


if __name__ == "__main__":
    check_conv()
    # the CNN and the residual net alternately, best of 3 each: a ratio that survives a shared,
    # loaded machine better than either absolute figure
    cnn, res = [], []
    for _ in range(2):
        cnn.append(time_step(name="cnn", repeats=3))
        res.append(time_step(name="resnet", repeats=3))
    cnn, res = min(cnn), min(res)
    print(f"resnet / cnn step time: {res / cnn:.2f}")
