"""The models, as Flax NNX modules taking (B, 28, 28, 1) float32 in [0, 1], and their registry.

One file per architecture (mlp, cnn), what they share in layers, the CNN's fused conv+pool in
conv_pool; here, the names the rest of the project builds models by, and their costs.
"""

from __future__ import annotations

import jax
from flax import nnx

from flaxdigits.models.cnn import CNN
from flaxdigits.models.layers import Dropout
from flaxdigits.models.mlp import MLP
from flaxdigits.models.resnet import ResNet
from flaxdigits.core import contract

MODELS: dict[str, type[nnx.Module]] = {"mlp": MLP, "cnn": CNN, "resnet": ResNet}  # contract.MODEL_NAMES


def create_model(name: str, seed: int = 0, conv_pool: str | None = None) -> nnx.Module:
    """Build a freshly initialised model by name (one of contract.MODEL_NAMES). conv_pool: the
    CNN's training kernel (conv_pool.KERNELS; None: the default); a model without a conv has
    none to choose and ignores it."""
    options = {"conv_pool": conv_pool} if conv_pool is not None and name == "cnn" else {}
    return MODELS[contract.check_model_name(name)](rngs=nnx.Rngs(params=seed), **options)


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


def predict_proba(model: nnx.Module, images: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Softmax probabilities for float images (B, 28, 28, 1) in [0, 1], the logits divided by a
    temperature first (calibration, fitted at export: export/confidence.py) unless it is 1."""
    logits = model(images)
    if temperature != 1.0:
        logits = logits / temperature
    return jax.nn.softmax(logits, axis=-1)


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
