"""A finished run: its verified checkpoint and metrics, its data splits, its evaluation.

The small API that everything after training reads (export, report, `flaxdigits evaluate`):
load_run(run_dir) -> Run, Run.split(mnist), Run.evaluate(images, labels), evaluate_run().
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from flaxdigits import models
from flaxdigits.core import contract
from flaxdigits.core.atomic import write_json_atomic
from flaxdigits.data.mnist import MNIST, Split, load_mnist, split_mnist
from flaxdigits.training import checkpoint, checkpoint_v1
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.evaluate import evaluate_arrays, evaluate_splits, summarize_splits
from flaxdigits.training.state import abstract_state

CheckpointError = checkpoint.CheckpointError


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run loaded from disk."""

    directory: Path
    model: nnx.Module
    config: TrainConfig
    metrics: dict[str, Any]
    checkpoint_state_sha256: str  # checkpoint.state_digest of its arrays: the provenance

    @property
    def params(self) -> int:
        """Number of trainable scalars."""
        return models.count_params(self.model)

    def split(self, mnist: MNIST) -> Split:
        """MNIST split the way this run was trained (its validation fraction)."""
        return split_mnist(mnist, self.config.val_fraction)

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Loss, accuracy, predictions and probabilities of the model on uint8 images."""
        graphdef, params = nnx.split(self.model, nnx.Param)
        labels = np.asarray(labels, np.int32)
        return evaluate_arrays(graphdef, params, images, labels, self.config.eval_batch_size)

    def logits(self, images: np.ndarray, batch: int = 1000) -> np.ndarray:
        """The model's logits (N, 10) float32 for uint8 images (N, 28, 28), or float ones in
        [0, 1] (N, 28, 28)."""
        forward = nnx.jit(lambda m, x: m(x))
        x = images if images.dtype != np.uint8 else contract.scale_pixels(images)
        x = np.asarray(x, np.float32)[..., None]
        out = [np.asarray(forward(self.model, x[i : i + batch])) for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def load_run(run_dir: Path) -> Run:
    """Load a trained run: verified checkpoint, model with trained params, config, metrics.

    Args:
      run_dir: a directory written by `flaxdigits train`.

    Returns:
      Run(directory, model, config, metrics, checkpoint_state_sha256).

    Raises:
      CheckpointError: missing, half-written, tampered or foreign checkpoint, or arrays
        restored other than they were saved.
    """
    run_dir = Path(run_dir)
    saved = checkpoint.read(run_dir)
    try:
        config = TrainConfig.from_dict(saved.meta["config"])
    except (KeyError, ValueError, TypeError) as e:
        msg = f"{run_dir}: checkpoint config is not ours ({e})"
        raise CheckpointError(msg) from None
    graphdef, template = abstract_state(config)  # shapes only: nothing computed
    state = checkpoint.fill(saved, template, str(run_dir))
    state_sha256 = checkpoint.state_sha256(saved, state, str(run_dir))
    metrics_path = run_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{metrics_path}: unreadable ({e})") from None
    return Run(
        directory=run_dir,
        model=nnx.merge(graphdef, state.params),
        config=config,
        metrics=metrics,
        checkpoint_state_sha256=state_sha256,
    )


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n: int = 10) -> np.ndarray:
    """(n, n) counts: row = true class, column = predicted class."""
    return np.bincount(
        np.asarray(labels, np.int64) * n + np.asarray(predictions, np.int64), minlength=n * n
    ).reshape(n, n)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class: diagonal over row sums."""
    totals = confusion.sum(axis=1)
    return np.divide(np.diag(confusion), totals, out=np.zeros(len(totals)), where=totals > 0)


def evaluate_run(
    run_dir: Path,
    data_source: str = "auto",
    write: bool = True,
    with_predictions: bool = False,
    mnist: MNIST | None = None,
) -> dict[str, Any]:
    """Metrics of a trained run on train/val/test plus confusion and per-class accuracy.

    Writes run_dir/evaluation.json (atomically) when write is True. The test predictions and
    probabilities come back under "test_predictions"/"test_probabilities" with with_predictions.
    mnist: the verified data, when the caller has it (else loaded from data_source).
    """
    run = load_run(Path(run_dir))
    mnist = mnist if mnist is not None else load_mnist(data_source)
    graphdef, params = nnx.split(run.model, nnx.Param)
    results = evaluate_splits(graphdef, params, run.split(mnist), run.config.eval_batch_size)
    result: dict[str, Any] = {
        "model": run.config.model,
        "params": run.metrics.get("params"),
        **run.config.to_dict(),
        **summarize_splits(results),
    }
    test = results["test"]
    confusion = confusion_matrix(mnist.test_labels, test["predictions"])
    result["confusion_matrix"] = confusion.tolist()
    result["per_class_accuracy"] = per_class_accuracy(confusion).tolist()
    result["checkpoint_state_sha256"] = run.checkpoint_state_sha256
    if write:
        write_json_atomic(Path(run_dir) / "evaluation.json", result)
    if with_predictions:
        result["test_predictions"] = test["predictions"]
        result["test_probabilities"] = test["probabilities"]
    return result


def format_evaluation(result: dict[str, Any]) -> str:
    """A terminal-friendly summary of evaluate_run's result."""
    lines = [
        f"model {result['model']} ({result['params']} parameters)",
        f"  train accuracy {result['train_accuracy']:.4f}  loss {result['train_loss']:.4f}",
        f"  test  accuracy {result['test_accuracy']:.4f}  loss {result['test_loss']:.4f}",
        f"  overfit gap (train - test) {result['overfit_gap'] * 100:+.2f} points",
        "  per-class test accuracy: "
        + "  ".join(f"{d}:{a:.3f}" for d, a in enumerate(result["per_class_accuracy"])),
        "  confusion matrix (rows: true, columns: predicted):",
        "       " + "".join(f"{d:>6}" for d in range(10)),
    ]
    for d, row in enumerate(result["confusion_matrix"]):
        lines.append(f"    {d}: " + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def migrate_run(run_dir: Path, log=print) -> dict[str, Any]:
    """Convert a run's msgpack checkpoint (flaxdigits.checkpoint.v1) to the Orbax format, once.

    The old file is sha256-verified and checked against the model before anything is written;
    the new step is written beside it, then the pointer moves to it (the old pointer is kept as
    checkpoint.v1.json, the old files stay). metrics.json's checkpoint_sha256 (the v1 file's
    digest) becomes the checkpoint_state_sha256 that runs trained now record.

    Returns:
      The new pointer.

    Raises:
      CheckpointError: not a v1 run, or its file is damaged or foreign.
    """
    run_dir = Path(run_dir)
    old = checkpoint_v1.pointer(run_dir)
    if old is None:
        checkpoint.pointer(run_dir)  # no checkpoint, or unreadable: says which
        raise CheckpointError(f"{run_dir}: already in the current format ({checkpoint.FORMAT})")
    saved = checkpoint_v1.read(run_dir, old)
    try:
        config = TrainConfig.from_dict(saved["meta"]["config"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{run_dir}: checkpoint config is not ours ({e})") from None
    state = checkpoint_v1.fill(saved, abstract_state(config)[1], str(run_dir))
    write_json_atomic(run_dir / "checkpoint.v1.json", old)
    checkpoint.save(run_dir, state, saved["meta"], epoch=old["epoch"])
    new = checkpoint.pointer(run_dir)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("checkpoint_sha256") == old["sha256"]:
            del metrics["checkpoint_sha256"]
            metrics["checkpoint_state_sha256"] = new["state_sha256"]
            write_json_atomic(metrics_path, metrics)
    log(f"{run_dir}: {old['file']} -> {new['dir']} (epoch {new['epoch']}); old files kept")
    return new
