"""Evaluation of parameters over whole uint8 splits: loss, accuracy, predictions, probabilities."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flaxdigits.core import contract
from flaxdigits.data.mnist import Split
from flaxdigits.training.config import TrainConfig


def loss_and_logits(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    images,
    labels,
    dropout=None,
    compute_dtype=None,
    outlier_weight: float = 0.0,
):
    """Mean cross-entropy and logits of float images (B, 28, 28, 1) with int labels (B,);
    dropout (models.Dropout) in training only.

    With an outlier_weight (outlier exposure), a label of -1 marks a non-digit: the loss is
    the digits' mean cross-entropy plus outlier_weight times the non-digits' mean cross-entropy
    to the uniform answer (the mean of -log p over the 10 outputs); a row labelled below -1 is
    left out of both. 0 computes the plain loss.

    With a compute_dtype (mixed precision: jnp.bfloat16) the model runs in it: the float
    parameters and the images are cast to it, so the forward pass and its gradient are computed
    in it, and the gradient reaches the float32 parameters through the cast; the logits come
    back in float32 for the softmax and the loss. None (or float32) changes nothing.
    """
    if compute_dtype is not None and jnp.dtype(compute_dtype) != jnp.float32:
        params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
        images = images.astype(compute_dtype)
    logits = nnx.merge(graphdef, params)(images, dropout).astype(jnp.float32)  # (B, 10)
    if not outlier_weight:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, logits
    digit, other = labels >= 0, labels == -1  # below -1: a row left out (steps.LEFT_OUT)
    per_digit = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
    flat = -jnp.mean(jax.nn.log_softmax(logits, -1), -1)
    n_digits, n_other = jnp.sum(digit), jnp.sum(other)
    loss = jnp.sum(jnp.where(digit, per_digit, 0.0)) / jnp.maximum(n_digits, 1)
    loss = loss + outlier_weight * jnp.sum(jnp.where(other, flat, 0.0)) / jnp.maximum(n_other, 1)
    return loss, logits


def eval_chunk(graphdef, params, images, labels, mask):
    """Summed loss, correct count, predictions and probabilities of one padded uint8 chunk."""
    _, logits = loss_and_logits(graphdef, params, contract.to_model_input(images, jnp), labels)
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    preds = jnp.argmax(logits, -1)
    return (
        jnp.sum(per_example * mask),
        jnp.sum((preds == labels) * mask),
        preds,
        jax.nn.softmax(logits, -1),
    )


@functools.lru_cache(maxsize=8)
def _jitted_eval_chunk(graphdef: nnx.GraphDef):
    return jax.jit(functools.partial(eval_chunk, graphdef))


def evaluate_arrays(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    images,
    labels,
    batch_size: int = TrainConfig.eval_batch_size,
) -> dict[str, Any]:
    """Loss, accuracy, predictions and probabilities over a whole uint8 split (host or device)."""
    n = int(images.shape[0])
    fn = _jitted_eval_chunk(graphdef)
    loss_sum, correct, preds, probs = 0.0, 0, [], []
    for start in range(0, n, batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        m = x.shape[0]
        mask = jnp.ones((batch_size,), jnp.float32)
        if m < batch_size:  # pad the last chunk to the static shape, masked out
            pad = batch_size - m
            x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
            y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)])
            mask = mask.at[m:].set(0.0)
        s, c, p, pr = fn(params, x, y, mask)
        loss_sum += float(s)
        correct += int(c)
        preds.append(np.asarray(p[:m]))
        probs.append(np.asarray(pr[:m]))
    return {
        "loss": loss_sum / n,
        "accuracy": correct / n,
        "predictions": np.concatenate(preds),
        "probabilities": np.concatenate(probs),
    }


def evaluate_splits(graphdef, params, split: Split, batch_size: int) -> dict[str, dict]:
    """evaluate_arrays on the train, test and (if any) validation splits, once each."""
    parts = {
        "train": (split.train_images, split.train_labels),
        "test": (split.test_images, split.test_labels),
        "val": (split.val_images, split.val_labels),
    }
    return {
        name: evaluate_arrays(graphdef, params, images, labels, batch_size)
        for name, (images, labels) in parts.items()
        if int(images.shape[0])
    }


def summarize_splits(results: dict[str, dict]) -> dict[str, float]:
    """Loss and accuracy per split, plus the overfitting gap train - test."""
    out = {}
    for name in ("train", "test", "val"):
        if name in results:
            out |= {
                f"{name}_accuracy": results[name]["accuracy"],
                f"{name}_loss": results[name]["loss"],
            }
    out["overfit_gap"] = out["train_accuracy"] - out["test_accuracy"]
    return out
