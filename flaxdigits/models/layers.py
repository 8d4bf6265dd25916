"""What the models share: Keras' initialisers and the training-only dropout."""

from __future__ import annotations

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


def drop(x: jax.Array, dropout: Dropout | None) -> jax.Array:
    """x (B, F) with each feature zeroed with probability rate, the rest divided by 1 - rate
    (inverted dropout: the expected value is x, so the model is evaluated without it); None or
    a rate of 0 gives x back. It adds no parameter and nothing to the exported graph."""
    if dropout is None or not dropout.rate:
        return x
    keep = jax.random.bernoulli(dropout.key, 1.0 - dropout.rate, x.shape)
    return jnp.where(keep, x / (1.0 - dropout.rate), 0.0)
