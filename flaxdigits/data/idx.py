"""MNIST's four IDX files: their canonical digests, parsing, encoding and verification.

numpy only. Every source (flaxdigits.data.mnist, flaxdigits.data.sources) ends in verify().
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import numpy as np

from flaxdigits.core.files import ReadError, read_capped

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


def verify(files: dict[str, bytes], source: str) -> MNIST:
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


def read_maybe_gz(path: Path) -> bytes:
    """Read a file, transparently gunzipping .gz files (size-capped)."""
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                data = f.read(_MAX_IDX + 1)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise MNISTError(f"{path}: not a valid gzip file ({e})") from None
        if len(data) > _MAX_IDX:
            raise MNISTError(f"{path}: larger than any MNIST file ({_MAX_IDX} bytes)")
        return data
    try:
        return read_capped(path, _MAX_IDX, what="MNIST file")
    except ReadError as e:
        raise MNISTError(f"{path}: {e} (no MNIST file is larger)") from None


# ----------------------------------------------------------------------------------- sources
