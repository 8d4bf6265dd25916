"""The MLP: Flatten(784) -> Dense 128 ReLU -> Dense 10, 101,770 parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flaxdigits.models.layers import KERNEL_INIT, Dropout, dense, drop


class MLP(nnx.Module):
    """Flatten(784) -> Dense 128 ReLU -> Dense 10: 101,770 parameters."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(28 * 28, 128, kernel_init=KERNEL_INIT, rngs=rngs)
        self.out = nnx.Linear(128, 10, kernel_init=KERNEL_INIT, rngs=rngs)

    def __call__(self, x: jax.Array, dropout: Dropout | None = None) -> jax.Array:
        """(B, 28, 28, 1) images -> (B, 10) logits (dropout: in training only)."""
        x = x.reshape(x.shape[0], -1)  # (B, 784)
        hidden = nnx.relu(dense(self.hidden, drop(x, dropout)))
        return dense(self.out, hidden, out_dtype=jnp.float32)  # float32 logits in any precision
