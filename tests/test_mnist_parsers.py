"""The MNIST parsers' promises, byte by byte: IDX headers, the verify step, the size caps, the
order-independent digest, the loopback-only URL rule and the restricted unpickler.

Every source ends in verify() against the canonical sha256 (flaxdigits.data.idx); here the
canonical table is swapped for the digests of a few tiny arrays, so the logic runs in
milliseconds without the 55 MB dataset. Kept apart from test_mnist_files.py / test_sources.py:
these were written against the mutants `make mutation` showed surviving (docs/testing.md).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import struct
import tracemalloc

import numpy as np
import pytest

from flaxdigits.data import idx as mnist_files
from flaxdigits.data import sources
from flaxdigits.data.idx import MNISTError, encode_idx, parse_idx

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


# ------------------------------------------------------------ sources: unordered records


def _records(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(
        np.uint8
    )


def test_records_digest_ignores_order_and_sorts_by_label_then_pixels():
    images, labels = _records(6, 1)
    labels[:] = [3, 1, 3, 0, 1, 3]
    images[2, 0, 0], images[5, 0, 0], images[0, 0, 0] = 9, 200, 10
    images[2, 0, 1:] = images[5, 0, 1:] = images[0, 0, 1:] = 0
    digest, order = sources._records_digest(images, labels)
    records = np.concatenate([labels[:, None], images.reshape(6, -1)], axis=1)
    assert digest == hashlib.sha256(records[order].tobytes()).hexdigest()
    assert labels[order].tolist() == [0, 1, 1, 3, 3, 3]
    assert order[3:].tolist() == [2, 0, 5]  # same label: by pixel bytes, first pixel first
    shuffled = np.random.default_rng(2).permutation(6)
    again, _ = sources._records_digest(images[shuffled], labels[shuffled])
    assert again == digest
    labels[0] = 4
    assert sources._records_digest(images, labels)[0] != digest


def test_records_are_hashed_as_bytes_whatever_the_label_dtype():
    images, labels = _records(4, 3)
    digest, _ = sources._records_digest(images, labels)
    assert sources._records_digest(images, labels.astype(np.int64))[0] == digest


def test_unordered_splits_are_verified_and_returned_sorted(monkeypatch):
    train, test = _records(5, 4), _records(3, 5)
    digests = {
        "train": sources._records_digest(*train)[0],
        "test": sources._records_digest(*test)[0],
    }
    monkeypatch.setattr(sources, "RECORD_DIGESTS", digests)
    got = sources._from_unordered({"train": train, "test": test}, "somewhere")
    assert got.source == "somewhere"
    for (images, labels), got_images, got_labels in [
        (train, got.train_images, got.train_labels),
        (test, got.test_images, got.test_labels),
    ]:
        order = sources._records_digest(images, labels)[1]
        np.testing.assert_array_equal(got_images, images[order])
        np.testing.assert_array_equal(got_labels, labels[order])
    bad = (test[0], (test[1] + 1) % 10)
    digest = sources._records_digest(*bad)[0]
    message = f"somewhere: test records digest {digest[:16]}… is not MNIST's"
    with pytest.raises(MNISTError, match=f"^{re.escape(message)}$"):
        sources._from_unordered({"train": train, "test": bad}, "somewhere")


# --------------------------------------------------------------------- sources: mirror URLs


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/mnist/x.gz",
        "http://127.0.0.1:8000/x.gz",
        "http://127.8.9.10/x.gz",
        "http://[::1]:8000/x.gz",
        "http://localhost:8000/x.gz",
    ],
)
def test_https_anywhere_and_plain_http_on_loopback_only(url):
    sources._check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/x.gz",
        "http://10.0.0.1/x.gz",
        "http://localhost.example.com/x.gz",
        "http:///x.gz",
        "ftp://127.0.0.1/x.gz",
        "file:///etc/passwd",
        "HTTPS-ish://example.com/",
    ],
)
def test_everything_else_is_refused_by_name(url):
    message = f"mirror: refusing {url!r}: only https:// (or http:// on loopback)"
    with pytest.raises(MNISTError, match=f"^{re.escape(message)}$"):
        sources._check_url(url)


# ----------------------------------------------------------- sources: the pickled wheel copy


def test_only_numpy_array_parts_are_unpickled():
    unpickler = sources._RestrictedUnpickler(io.BytesIO(b""))
    rebuild = np.ndarray.__reduce__(np.zeros(0))[0]
    assert unpickler.find_class("numpy.core.multiarray", "_reconstruct") is rebuild
    assert unpickler.find_class("numpy._core.multiarray", "_reconstruct") is rebuild
    assert unpickler.find_class("numpy", "ndarray") is np.ndarray
    assert unpickler.find_class("numpy", "dtype") is np.dtype
    for module, name in [
        ("numpy", "_reconstruct"),
        ("numpy.core.multiarray", "ndarray"),
        ("builtins", "eval"),
        ("numpy", "load"),
    ]:
        message = f"refusing to load {module}.{name}: not a numpy array"
        with pytest.raises(pickle.UnpicklingError, match=f"^{re.escape(message)}$"):
            unpickler.find_class(module, name)


def _py2_pickle(a: np.ndarray) -> bytes:
    """The protocol-2 pickle Python 2's numpy wrote (str data, not bytes): mnist.pkl.gz's kind."""

    def string(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    dims = b"".join(b"J" + struct.pack("<i", d) for d in a.shape)
    order = b"|" if a.dtype.itemsize == 1 else b"<"
    return (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + string(b"b")
        + b"\x87R(K\x01("
        + dims
        + b"tcnumpy\ndtype\n"
        + string(a.dtype.str[1:].encode())
        + b"K\x00K\x01\x87R(K\x03"
        + string(order)
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + string(a.tobytes())
        + b"tb."
    )


def test_python2_pickles_of_arrays_load():
    for array in (
        np.array([200, 255, 0], np.uint8),
        np.array([[0.99609375, 0.5], [0.0, 0.25]], np.float32),
    ):
        got = sources.restricted_loads(_py2_pickle(array))
        assert got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)


@pytest.fixture
def tiny_pickle(monkeypatch, tiny_mnist):
    """mnist.pkl.gz's layout ((train, valid, test) of (x float32 pixel/256, y)) for tiny_mnist."""
    _, arrays = tiny_mnist
    train_x = arrays["train-images-idx3-ubyte"].reshape(-1, 784).astype(np.float32) / 256
    train_y = arrays["train-labels-idx1-ubyte"].astype(np.int64)
    test_x = arrays["t10k-images-idx3-ubyte"].reshape(-1, 784).astype(np.float32) / 256
    test_y = arrays["t10k-labels-idx1-ubyte"].astype(np.int64)
    splits = ((train_x[:2], train_y[:2]), (train_x[2:], train_y[2:]), (test_x, test_y))
    blob = gzip.compress(pickle.dumps(splits, protocol=4))
    monkeypatch.setattr(sources, "PYPI_MEMBER_SHA256", hashlib.sha256(blob).hexdigest())
    return blob, arrays


def test_the_pickled_copy_rebuilds_the_canonical_bytes(tiny_pickle):
    blob, arrays = tiny_pickle
    got = sources.from_pickle_gz(blob, source="wheel")
    assert got.source == "wheel"
    np.testing.assert_array_equal(got.train_images, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(got.train_labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(got.test_images, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(got.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert sources.from_pickle_gz(blob).source == "pypi"


def test_pixels_round_to_the_nearest_byte_and_saturate(monkeypatch, tiny_mnist):
    files, arrays = tiny_mnist
    images = np.zeros((3, 784), np.float64)
    images[0, :4] = [0.5 / 256 - 1e-9, 0.5 / 256 + 1e-9, 1.0, 254.6 / 256]
    want = np.zeros((3, 28, 28), np.uint8)
    want[0, 0, :4] = [0, 1, 255, 255]
    table = dict(mnist_files.FILES)
    table["train-images-idx3-ubyte"] = (hashlib.sha256(encode_idx(want)).hexdigest(), want.shape)
    monkeypatch.setattr(mnist_files, "FILES", table)
    test_x = arrays["t10k-images-idx3-ubyte"].reshape(-1, 784) / 256
    splits = (
        (images[:1], arrays["train-labels-idx1-ubyte"][:1]),
        (images[1:], arrays["train-labels-idx1-ubyte"][1:]),
        (test_x, arrays["t10k-labels-idx1-ubyte"]),
    )
    blob = gzip.compress(pickle.dumps(splits, protocol=4))
    monkeypatch.setattr(sources, "PYPI_MEMBER_SHA256", hashlib.sha256(blob).hexdigest())
    np.testing.assert_array_equal(sources.from_pickle_gz(blob).train_images, want)


def test_other_bytes_are_refused_before_unpickling_with_both_digests():
    blob = gzip.compress(pickle.dumps(None))
    got = hashlib.sha256(blob).hexdigest()
    message = (
        f"src: {sources.PYPI_MEMBER} has sha256 {got[:16]}…, expected "
        f"{sources.PYPI_MEMBER_SHA256[:16]}…; refusing to unpickle it"
    )
    with pytest.raises(MNISTError, match=f"^{re.escape(message)}$"):
        sources.from_pickle_gz(blob, source="src")


@pytest.mark.parametrize(
    "payload",
    [
        b"not gzip",
        # mtime=0: the same bytes, so the same test ids, in every process (pytest-xdist workers)
        gzip.compress(b"not a pickle", mtime=0),
        gzip.compress(pickle.dumps(("a", "b")), mtime=0),  # two splits, not three
        gzip.compress(pickle.dumps(print), mtime=0),  # builtins.print: refused
    ],
)
def test_hashed_bytes_that_do_not_unpickle_are_refused(monkeypatch, payload):
    monkeypatch.setattr(sources, "PYPI_MEMBER_SHA256", hashlib.sha256(payload).hexdigest())
    with pytest.raises(MNISTError, match=rf"^src: cannot unpickle {sources.PYPI_MEMBER} \("):
        sources.from_pickle_gz(payload, source="src")
