"""The MNIST parsers' promises, byte by byte: IDX headers, the verify step, the size caps, the
order-independent digest, the loopback-only URL rule and the restricted unpickler.

Every source ends in verify() against the canonical sha256 (flaxdigits.mnist_files); here the
canonical table is swapped for the digests of a few tiny arrays, so the logic runs in
milliseconds without the 55 MB dataset. Kept apart from test_mnist_files.py / test_sources.py:
these were written against the mutants `make mutation` showed surviving (TESTING.md).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import tracemalloc

import numpy as np
import pytest

from flaxdigits import mnist_files
from flaxdigits.mnist_files import MNISTError, encode_idx, parse_idx

# ----------------------------------------------------------------------------------- parse_idx


def _header(*dims: int, ndim: int | None = None) -> bytes:
    ndim = len(dims) if ndim is None else ndim
    return bytes([0, 0, 8, ndim]) + np.asarray(dims, ">u4").tobytes()


def test_labels_and_images_parse_to_their_dimensions():
    labels = np.array([7, 2, 1, 0], np.uint8)
    np.testing.assert_array_equal(parse_idx(encode_idx(labels)), labels)
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(encode_idx(images)), images)
    # An empty file of labels is well formed: the header and no body.
    assert parse_idx(_header(0)).shape == (0,)


def test_the_default_name_starts_every_message():
    with pytest.raises(MNISTError, match=r"^IDX data: truncated: 0 bytes, not even an IDX header$"):
        parse_idx(b"")


def test_a_bare_magic_number_is_a_truncated_header_not_a_missing_one():
    with pytest.raises(MNISTError, match=r"^f: truncated header: 4 bytes, expected 8$"):
        parse_idx(bytes([0, 0, 8, 1]), "f")
    with pytest.raises(MNISTError, match=r"^f: truncated header: 15 bytes, expected 16$"):
        parse_idx(_header(1, 1, 1)[:15], "f")
    with pytest.raises(MNISTError, match=r"^f: truncated: 3 bytes, not even an IDX header$"):
        parse_idx(b"\0\0\x08", "f")


@pytest.mark.parametrize(
    "magic",
    [
        b"\x01\x00\x08\x01",  # first byte not zero
        b"\x00\x01\x08\x01",  # second byte not zero
        b"\x00\x00\x09\x01",  # not unsigned bytes
        b"\x00\x00\x08\x02",  # two dimensions: neither labels nor images
        b"\x00\x00\x08\x04",
    ],
)
def test_each_part_of_the_magic_number_is_checked_on_its_own(magic):
    body = magic + np.asarray([1] * magic[3], ">u4").tobytes() + b"\0"
    message = (
        f"f: bad magic number {magic.hex()}: expected 00000801 (labels) or 00000803 (images); "
        "is this an MNIST IDX file (gzipped files must end in .gz)?"
    )
    with pytest.raises(MNISTError, match=f"^{re.escape(message)}$"):
        parse_idx(body, "f")


def test_size_mismatches_name_the_direction_and_the_dimensions():
    good = encode_idx(np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(
        MNISTError,
        match=r"^f: has trailing bytes: 41 bytes, expected 40 for dimensions \(2, 3, 4\)$",
    ):
        parse_idx(good + b"\0", "f")
    with pytest.raises(
        MNISTError, match=r"^f: truncated: 39 bytes, expected 40 for dimensions \(2, 3, 4\)$"
    ):
        parse_idx(good[:-1], "f")


def test_encode_writes_one_byte_per_value_whatever_the_input_dtype():
    values = [[1, 2], [3, 255]]
    want = _header(1, 2, 2) + bytes([1, 2, 3, 255])
    assert encode_idx(np.array([values], np.int64)) == want
    assert encode_idx(np.array([values], np.uint8)[:, :, ::-1][:, :, ::-1]) == want
    assert encode_idx(np.array([5, 6], np.int32)) == _header(2) + b"\x05\x06"


# -------------------------------------------------------------------------------------- verify


@pytest.fixture
def tiny_mnist(monkeypatch):
    """The canonical table swapped for four tiny arrays; returns (their IDX files, arrays)."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([5, 0, 4], np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([7, 2], np.uint8),
    }
    files = {name: encode_idx(a) for name, a in arrays.items()}
    table = {name: (hashlib.sha256(files[name]).hexdigest(), a.shape) for name, a in arrays.items()}
    monkeypatch.setattr(mnist_files, "FILES", table)
    return files, arrays


def test_verify_returns_the_four_arrays_in_their_fields(tiny_mnist):
    files, arrays = tiny_mnist
    got = mnist_files.verify(dict(files), "here")
    assert got.source == "here"
    np.testing.assert_array_equal(got.train_images, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(got.train_labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(got.test_images, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(got.test_labels, arrays["t10k-labels-idx1-ubyte"])


def test_verify_names_a_missing_file(tiny_mnist):
    files, _ = tiny_mnist
    del files["t10k-labels-idx1-ubyte"]
    with pytest.raises(MNISTError, match=r"^here: t10k-labels-idx1-ubyte is missing$"):
        mnist_files.verify(files, "here")


def test_verify_refuses_other_bytes_quoting_both_digests(tiny_mnist):
    files, _ = tiny_mnist
    files["train-labels-idx1-ubyte"] = encode_idx(np.array([5, 0, 3], np.uint8))
    got = hashlib.sha256(files["train-labels-idx1-ubyte"]).hexdigest()
    want = mnist_files.FILES["train-labels-idx1-ubyte"][0]
    message = f"here: train-labels-idx1-ubyte has sha256 {got[:16]}…, expected {want[:16]}…"
    with pytest.raises(MNISTError, match=f"^{re.escape(message)}$"):
        mnist_files.verify(files, "here")


def test_verify_parses_under_the_source_and_file_name(tiny_mnist, monkeypatch):
    files, _ = tiny_mnist
    files["train-labels-idx1-ubyte"] = b"\x1f\x8b\x08\x00"  # hash it as canonical: parse refuses
    digest = hashlib.sha256(files["train-labels-idx1-ubyte"]).hexdigest()
    table = dict(mnist_files.FILES, **{"train-labels-idx1-ubyte": (digest, (3,))})
    monkeypatch.setattr(mnist_files, "FILES", table)
    with pytest.raises(MNISTError, match=r"^here: train-labels-idx1-ubyte: bad magic number"):
        mnist_files.verify(files, "here")


def test_verify_checks_the_shape_after_the_hash(tiny_mnist, monkeypatch):
    files, _ = tiny_mnist
    table = dict(mnist_files.FILES)
    table["t10k-labels-idx1-ubyte"] = (table["t10k-labels-idx1-ubyte"][0], (3,))
    monkeypatch.setattr(mnist_files, "FILES", table)
    with pytest.raises(
        MNISTError, match=r"^here: t10k-labels-idx1-ubyte has shape \(2,\), expected \(3,\)$"
    ):
        mnist_files.verify(files, "here")


# --------------------------------------------------------------------------- reading, capped


def test_gz_files_up_to_the_cap_are_read_and_one_byte_more_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_files, "_MAX_IDX", 8)
    at_cap = tmp_path / "a.gz"
    at_cap.write_bytes(gzip.compress(b"12345678"))
    assert mnist_files.read_maybe_gz(at_cap) == b"12345678"
    over = tmp_path / "b.gz"
    over.write_bytes(gzip.compress(b"123456789"))
    message = f"{over}: larger than any MNIST file (8 bytes)"
    with pytest.raises(MNISTError, match=f"^{re.escape(message)}$"):
        mnist_files.read_maybe_gz(over)


def test_a_gzip_bomb_is_decompressed_only_up_to_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_files, "_MAX_IDX", 1000)
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(bytes(32 * 1024 * 1024), compresslevel=9))  # 32 KB on disk
    tracemalloc.start()
    try:
        with pytest.raises(MNISTError, match="larger than any MNIST file"):
            mnist_files.read_maybe_gz(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, f"decompressed {peak:,} bytes to refuse a bomb"


def test_raw_files_are_capped_and_named_as_mnist_files(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_files, "_MAX_IDX", 8)
    raw = tmp_path / "train-labels-idx1-ubyte"
    raw.write_bytes(b"12345678")
    assert mnist_files.read_maybe_gz(raw) == b"12345678"
    raw.write_bytes(b"123456789")
    message = f"{raw}: MNIST file is over the 8-byte limit (no MNIST file is larger)"
    with pytest.raises(MNISTError, match=f"^{re.escape(message)}$"):
        mnist_files.read_maybe_gz(raw)
    missing = tmp_path / "nothing"
    with pytest.raises(MNISTError, match=r"no such MNIST file \(no MNIST file is larger\)$"):
        mnist_files.read_maybe_gz(missing)
