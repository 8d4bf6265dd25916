"""Evaluation of a trained run: metrics, confusion matrix, per-class accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.atomic import write_json_atomic


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
    run_dir: Path, data_source: str = "auto", write: bool = True, with_predictions: bool = False
) -> dict[str, Any]:
    """Metrics of a trained run on train/val/test plus confusion and per-class accuracy.

    Writes run_dir/evaluation.json (atomically) when write is True. The test predictions and
    probabilities come back under "test_predictions"/"test_probabilities" with with_predictions.
    """
    from flax import nnx

    from flaxdigits.data import load_mnist
    from flaxdigits.train import evaluate_splits, load_run, split_data, summarize_splits

    run = load_run(Path(run_dir))
    mnist = load_mnist(data_source)
    split = split_data(mnist, run.config)
    graphdef, params = nnx.split(run.model, nnx.Param)
    results = evaluate_splits(graphdef, params, split, run.config.eval_batch_size)
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
    result["checkpoint_sha256"] = run.checkpoint_sha256
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
