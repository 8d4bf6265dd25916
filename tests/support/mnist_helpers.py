"""Helpers for the data tests: MNIST as its four IDX files, and comparing two MNIST copies."""

from __future__ import annotations

import numpy as np

from flaxdigits.data.idx import encode_idx


def idx_files(mnist) -> dict[str, bytes]:
    """The four uncompressed IDX files of an MNIST, by canonical name."""
    return {
        "train-images-idx3-ubyte": encode_idx(mnist.train_images),
        "train-labels-idx1-ubyte": encode_idx(mnist.train_labels),
        "t10k-images-idx3-ubyte": encode_idx(mnist.test_images),
        "t10k-labels-idx1-ubyte": encode_idx(mnist.test_labels),
    }


def assert_same(a, b) -> None:
    """Both MNIST copies hold the same four arrays."""
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
