"""The two compared models, as Flax NNX modules taking (B, 28, 28, 1) float32 in [0, 1]."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from flaxdigits.conv_pool import conv_max_pool, conv_max_pool_reference
from flaxdigits.core import contract

# Keras' defaults (glorot-uniform kernels, zero biases): the recipe the seed experiment used.
_KERNEL_INIT = nnx.initializers.glorot_uniform()


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


class MLP(nnx.Module):
    """Flatten(784) -> Dense 128 ReLU -> Dense 10: 101,770 parameters."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(28 * 28, 128, kernel_init=_KERNEL_INIT, rngs=rngs)
        self.out = nnx.Linear(128, 10, kernel_init=_KERNEL_INIT, rngs=rngs)

    def __call__(self, x: jax.Array, dropout: Dropout | None = None) -> jax.Array:
        """(B, 28, 28, 1) images -> (B, 10) logits (dropout: in training only)."""
        x = x.reshape(x.shape[0], -1)  # (B, 784)
        return self.out(nnx.relu(self.hidden(drop(x, dropout))))


class CNN(nnx.Module):
    """Conv 32 3x3 VALID ReLU -> MaxPool 2x2 -> Flatten 5408 -> Dense 100 ReLU -> Dense 10.

    Parameters are those of a plain nnx.Conv/nnx.Linear stack (`conv.kernel` HWIO, `conv.bias`).
    The conv's bias and ReLU are applied after the pooling: max-pooling commutes with adding a
    per-channel constant and with ReLU (both monotonic), so this is the same function with 4x
    less elementwise work on the largest tensor. With fast=True (the default) the conv and pooling
    run as `conv_max_pool`, whose training gradient is ~2x faster than XLA:CPU's autodiff;
    fast=False uses the textbook ops and JAX's own gradient (same values).
    """

    def __init__(self, *, rngs: nnx.Rngs, fast: bool = True):
        self.conv = nnx.Conv(
            1,
            32,
            kernel_size=(3, 3),
            padding="VALID",
            use_bias=False,
            kernel_init=_KERNEL_INIT,
            rngs=rngs,
        )
        # The bias is added after construction: nnx.Conv(use_bias=True) would draw a key for it
        # from rngs and shift every later layer's initialisation (zeros need no key).
        self.conv.use_bias = True
        self.conv.bias = nnx.Param(jnp.zeros((32,), jnp.float32))
        self.hidden = nnx.Linear(13 * 13 * 32, 100, kernel_init=_KERNEL_INIT, rngs=rngs)
        self.out = nnx.Linear(100, 10, kernel_init=_KERNEL_INIT, rngs=rngs)
        self.fast = fast

    def __call__(self, x: jax.Array, dropout: Dropout | None = None) -> jax.Array:
        """(B, 28, 28, 1) images -> (B, 10) logits (dropout: in training only)."""
        conv_pool = conv_max_pool if self.fast else conv_max_pool_reference
        x = conv_pool(x, self.conv.kernel[...])  # conv (B, 26, 26, 32), pool (B, 13, 13, 32)
        x = nnx.relu(x + self.conv.bias[...].reshape(1, 1, 1, -1))
        x = x.reshape(x.shape[0], -1)  # (B, 5408)
        return self.out(nnx.relu(self.hidden(drop(x, dropout))))


MODELS: dict[str, type[nnx.Module]] = {"mlp": MLP, "cnn": CNN}  # contract.MODEL_NAMES


def create_model(name: str, seed: int = 0) -> nnx.Module:
    """Build a freshly initialised model by name (one of contract.MODEL_NAMES)."""
    return MODELS[contract.check_model_name(name)](rngs=nnx.Rngs(params=seed))


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars in the model."""
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


# Multiply-adds of each weight layer for one image, input side first, and the forward pass's
# elementwise FLOPs (bias, ReLU, 3 comparisons per 2x2 pooling window).
_LAYER_MACS = {"mlp": (784 * 128, 128 * 10), "cnn": (26 * 26 * 32 * 9, 5408 * 100, 100 * 10)}
_ELEMENTWISE = {
    "mlp": 128 + 128 + 10,
    "cnn": 2 * 26 * 26 * 32 + 13 * 13 * 32 * 3 + 2 * 100 + 10,
}


def _layer_macs(name: str) -> tuple[int, ...]:
    return _LAYER_MACS[contract.check_model_name(name)]


def flops_per_image(name: str) -> int:
    """Forward-pass FLOPs for one image (multiply-add = 2 FLOPs; bias, ReLU, pool = 1 each)."""
    return 2 * sum(_layer_macs(name)) + _ELEMENTWISE[name]


def train_flops_per_image(name: str) -> int:
    """FLOPs of one training step per image: the forward pass plus the backward products it
    needs: every weight gradient, and the activation gradients of every layer but the first
    (nobody asks for the gradient of the input image). Elementwise backward work (ReLU and
    pooling masks, bias sums) is left out: under 2% of the total for either model.
    """
    macs = _layer_macs(name)
    return flops_per_image(name) + 2 * sum(macs) + 2 * sum(macs[1:])


def predict_proba(model: nnx.Module, images: jax.Array) -> jax.Array:
    """Softmax probabilities for float images (B, 28, 28, 1) in [0, 1]."""
    return jax.nn.softmax(model(images), axis=-1)


__all__ = [
    "CNN",
    "Dropout",
    "MLP",
    "MODELS",
    "count_params",
    "create_model",
    "flops_per_image",
    "predict_proba",
    "train_flops_per_image",
]
