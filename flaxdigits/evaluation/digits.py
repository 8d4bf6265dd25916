"""What the evaluations of served models on MNIST test digits share (canvas_eval, robustness):
the digits, a pool of worker processes, chunks of work, accuracy with refused inputs counted
wrong. numpy only (MNIST through flaxdigits.data.mnist, JAX-free).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

CHUNK = 250  # digits per worker task


def check_limit(limit: int | None) -> int | None:
    """limit if it is None or at least 1, else a ValueError."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return limit


def load_test_digits(limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` (default all) MNIST test digits, (N, 28, 28) uint8, and their int64
    labels."""
    from flaxdigits.data.mnist import load_mnist

    mnist = load_mnist()
    return mnist.test_images[:limit], mnist.test_labels[:limit].astype(np.int64)


def worker_count(workers: int | None) -> int:
    """The processes to use: `workers`, or all cores when None or 0."""
    return workers or os.cpu_count() or 1


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` fresh processes."""
    # spawn, not fork: the parent already runs onnxruntime thread pools.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def chunks(n: int, size: int = CHUNK) -> list[np.ndarray]:
    """Index arrays of consecutive runs of at most `size` out of range(n)."""
    return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


def accuracy(probabilities: np.ndarray, labels: np.ndarray, refused=None) -> float:
    """Share of rows whose argmax is the label; rows where `refused` (bool) is set, inputs the
    preprocessing turned down, count as wrong."""
    predicted = np.asarray(probabilities).argmax(axis=-1)
    right = predicted == labels
    if refused is not None:
        right &= ~np.asarray(refused, bool)
    return float(np.mean(right))
