"""The CNN: Conv 32 3x3 -> MaxPool 2x2 -> Dense 100 -> Dense 10, 542,230 parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flaxdigits.models.conv_pool import KERNELS
from flaxdigits.models.layers import KERNEL_INIT, Dropout, dense, drop


class CNN(nnx.Module):
    """Conv 32 3x3 VALID ReLU -> MaxPool 2x2 -> Flatten 5408 -> Dense 100 ReLU -> Dense 10.

    Parameters are those of a plain nnx.Conv/nnx.Linear stack (`conv.kernel` HWIO, `conv.bias`).
    The conv's bias and ReLU are applied after the pooling: max-pooling commutes with adding a
    per-channel constant and with ReLU (both monotonic), so this is the same function with 4x
    less elementwise work on the largest tensor. conv_pool names the training kernel of the conv
    and pooling (conv_pool.KERNELS): "strided" (the default, the fastest on XLA:CPU), "gather"
    (the one the original recipe trains with, for its runs of before bit for bit) or
    "reference" (the textbook ops and JAX's own gradient); all evaluate to the same values.
    """

    def __init__(self, *, rngs: nnx.Rngs, conv_pool: str = "strided"):
        if conv_pool not in KERNELS:
            raise ValueError(f"unknown conv_pool {conv_pool!r}; choose one of {list(KERNELS)}")
        self.conv = nnx.Conv(
            1,
            32,
            kernel_size=(3, 3),
            padding="VALID",
            use_bias=False,
            kernel_init=KERNEL_INIT,
            rngs=rngs,
        )
        # The bias is added after construction: nnx.Conv(use_bias=True) would draw a key for it
        # from rngs and shift every later layer's initialisation (zeros need no key).
        self.conv.use_bias = True
        self.conv.bias = nnx.Param(jnp.zeros((32,), jnp.float32))
        self.hidden = nnx.Linear(13 * 13 * 32, 100, kernel_init=KERNEL_INIT, rngs=rngs)
        self.out = nnx.Linear(100, 10, kernel_init=KERNEL_INIT, rngs=rngs)
        self.conv_pool = conv_pool

    def __call__(self, x: jax.Array, dropout: Dropout | None = None) -> jax.Array:
        """(B, 28, 28, 1) images -> (B, 10) logits (dropout: in training only)."""
        # conv (B, 26, 26, 32) and pool (B, 13, 13, 32), trained through the recipe's kernel
        x = KERNELS[self.conv_pool](x, self.conv.kernel[...])
        x = nnx.relu(x + self.conv.bias[...].reshape(1, 1, 1, -1))
        x = x.reshape(x.shape[0], -1)  # (B, 5408)
        hidden = nnx.relu(dense(self.hidden, drop(x, dropout)))
        return dense(self.out, hidden, out_dtype=jnp.float32)  # float32 logits in any precision
