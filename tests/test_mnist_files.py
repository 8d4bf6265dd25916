"""MNIST's IDX files: parsing refuses truncated, foreign and padded files; gz reading is capped."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from flaxdigits.data import idx as mnist_files
from flaxdigits.data.idx import MNISTError


def test_parse_idx_rejects_truncated_bad_magic_and_trailing_bytes():
    good = mnist_files.encode_idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    assert mnist_files.parse_idx(good).shape == (2, 3, 4)
    with pytest.raises(MNISTError, match=r"myfile: truncated: 30 bytes, expected 40"):
        mnist_files.parse_idx(good[:30], "myfile")
    with pytest.raises(MNISTError, match="bad magic number"):
        mnist_files.parse_idx(b"\x1f\x8b" + good[2:], "myfile")
    with pytest.raises(MNISTError, match="trailing bytes"):
        mnist_files.parse_idx(good + b"\0", "myfile")
    with pytest.raises(MNISTError, match="not even an IDX header"):
        mnist_files.parse_idx(b"\0\0", "myfile")


def test_gz_reader_reports_corrupt_gzip(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"x" * 1000)[:20])
    with pytest.raises(MNISTError, match="not a valid gzip file"):
        mnist_files.read_maybe_gz(bad)
    ok = tmp_path / "ok.gz"
    ok.write_bytes(gzip.compress(b"abc"))
    assert mnist_files.read_maybe_gz(ok) == b"abc"


def test_raw_reader_refuses_a_file_larger_than_any_mnist_file(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_files, "_MAX_IDX", 8)
    big = tmp_path / "train-images-idx3-ubyte"
    big.write_bytes(b"x" * 9)
    with pytest.raises(MNISTError, match="over the 8-byte limit"):
        mnist_files.read_maybe_gz(big)
    with pytest.raises(MNISTError, match="is a directory"):
        mnist_files.read_maybe_gz(tmp_path)
