"""What the models share: Keras' initialisers and the training-only dropout."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

# Keras' defaults (glorot-uniform kernels, zero biases): the recipe the seed experiment used.
KERNEL_INIT = nnx.initializers.glorot_uniform()


class Dropout(NamedTuple):
    """A training step's dropout: its key and the share of features it zeroes."""

    key: jax.Array
    rate: float


def dense(layer: nnx.Linear, x: jax.Array, out_dtype=None) -> jax.Array:
    """layer(x), in x's dtype (or out_dtype). float32: exactly layer(x). bfloat16 (mixed
    precision, the parameters cast to bfloat16 by the training step): bfloat16 operands, float32
    sums and bias, the result rounded to bfloat16 once (out_dtype float32: not rounded, as for
    the logits); its gradients likewise (mixed_matmul)."""
    if x.dtype == jnp.float32:
        return layer(x)
    y = mixed_matmul(x, layer.kernel[...].astype(x.dtype))
    y = y + layer.bias[...].astype(jnp.float32).reshape(1, -1)
    return y.astype(out_dtype or x.dtype)


@jax.custom_vjp
def mixed_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b of low-precision (bfloat16) operands, summed and returned in float32.

    Its gradient rounds the incoming float32 gradient to the operands' dtype and takes both
    products as the same kind of GEMM (low-precision operands, float32 sums), each result
    rounded to its operand's dtype: the backward pass computes in bfloat16 too, as it does on a
    GPU's or TPU's bfloat16 units. JAX's own transpose would multiply the float32 gradient by
    the bfloat16 operand, a float32 GEMM: on the 2-core Xeon a little faster than this one, and
    still slower than float32 throughout (docs/experiments/2026-12-05-mixed-precision.md). The
    float32 result matters on XLA:CPU, which runs bfloat16 x bfloat16 -> float32 natively but
    converts a bfloat16 -> bfloat16 dot to float32.
    """
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _mixed_matmul_fwd(a, b):
    return mixed_matmul(a, b), (a, b)


def _mixed_matmul_bwd(res, g):
    a, b = res
    g = g.astype(a.dtype)
    da = jnp.matmul(g, b.T, preferred_element_type=jnp.float32).astype(a.dtype)
    db = jnp.matmul(a.T, g, preferred_element_type=jnp.float32).astype(b.dtype)
    return da, db


mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)


def drop(x: jax.Array, dropout: Dropout | None) -> jax.Array:
    """x (B, F) with each feature zeroed with probability rate, the rest divided by 1 - rate
    (inverted dropout: the expected value is x, so the model is evaluated without it); None or
    a rate of 0 gives x back. It adds no parameter and nothing to the exported graph."""
    if dropout is None or not dropout.rate:
        return x
    keep = keep_mask(dropout.key, dropout.rate, x.shape)
    return jnp.where(keep, x / (1.0 - dropout.rate), 0.0)


# The widths, in bits, a dropout draw can take: each divides a 32-bit random word.
_DRAW_BITS = (1, 2, 4, 8, 16)


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """A boolean mask of `shape`, each entry False with probability `rate`, independently.

    A rate that is a multiple of 2**-k for k <= 16 (0.5, 0.25, 0.125, ...) is drawn exactly
    from k random bits per entry, 32 // k entries from each 32-bit word of one
    jax.random.bits call: for the robust CNN's 0.5, one bit per entry, 32x fewer threefry
    words than jax.random.bernoulli's one per entry (~0.3 against ~3 ms for a 128 x 5408 mask
    on the 2-core Xeon). Any other rate is drawn by jax.random.bernoulli, exact too.
    """
    for bits in _DRAW_BITS:
        dropped = rate * 2**bits
        if dropped == round(dropped):
            break
    else:
        return jax.random.bernoulli(key, 1.0 - rate, shape)
    n, per_word = math.prod(shape), 32 // bits
    words = jax.random.bits(key, (-(-n // per_word),), jnp.uint32)
    shifts = jnp.arange(per_word, dtype=jnp.uint32)[None, :] * bits
    draws = (words[:, None] >> shifts) & jnp.uint32(2**bits - 1)  # uniform in [0, 2**bits)
    return (draws.reshape(-1)[:n] >= int(dropped)).reshape(shape)
