"""Hostile inputs for the serve fuzz tests: Hypothesis strategies, the corpus, the outcome check.

Bad input never crashes serving: every case ends in a valid (28, 28) float32 image in [0, 1] or
a clear ImageInputError (for models a ModelLoadError, from `flaxdigits predict` one JSON
{"file", "error"} line). Hypothesis runs derandomized, so every run tries the same examples;
tests/corpus/ holds hostile files built by tests/corpus/make_corpus.py. Run the fuzz tests with
`--hypothesis-show-statistics -s` for the outcome counts behind RELIABILITY.md.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from flaxdigits.serve.runtime.decode import ImageInputError
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError, preprocess

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
INDEX = json.loads((CORPUS / "index.json").read_text())["cases"]
CASE_SECONDS = 20.0  # per case, on a busy 2-core machine: a hang, not a slow decode
DIGIT_PNG = (CORPUS / "digit.png").read_bytes()
with Image.open(CORPUS / "digit.png") as _digit:
    MASK = np.asarray(_digit) < 128  # the corpus's '7', (40, 40) bool ink


def fuzz(examples: int):
    """Hypothesis settings for the fuzz tests: the same examples every run, no example database."""
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,  # time is bounded per case by outcome() instead: generous, not flaky
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def outcome(value, method: str = "mnist") -> str:
    """Preprocess value: "ok" (output checked valid), "empty" or "error"; anything else fails."""
    start = time.perf_counter()
    try:
        result = preprocess(value, method)
    except EmptyCanvasError:
        kind = "empty"
    except ImageInputError as e:
        message = str(e)
        assert message.strip() and "Traceback" not in message and len(message) < 2000, message
        kind = "error"
    else:
        image = result.image
        assert image.shape == (28, 28) and image.dtype == np.float32
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0
        assert result.method == method
        kind = "ok"
    elapsed = time.perf_counter() - start
    assert elapsed < CASE_SECONDS, f"one case took {elapsed:.1f} s"
    event(kind)
    return kind


# ------------------------------------------------------------------------------------ arrays

DTYPES = [
    "?", "u1", "i1", "<u2", ">u2", "<i2", ">i2", "<u4", ">i4", "<i8", "<u8",
    "<f2", "<f4", ">f4", "<f8", ">f8", "<c8",
]  # fmt: skip
SPECIALS = [np.nan, np.inf, -np.inf, -1.0, 256.0, 70000.0, -0.0, 1e-40, 1e30]
_DENSE_DTYPES = [np.uint8, np.uint16, np.int32, np.float16, np.float32, np.float64, np.bool_]


@st.composite
def _dense_arrays(draw) -> np.ndarray:
    """Small (H, W) or (H, W, 1-5) arrays whose every element Hypothesis draws (and shrinks)."""
    dtype = np.dtype(draw(st.sampled_from(_DENSE_DTYPES)))
    height, width = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    channels = draw(st.sampled_from([None, 1, 2, 3, 4, 5]))
    shape = (height, width) if channels is None else (height, width, channels)
    elements = None
    if dtype.kind == "f":
        elements = st.one_of(
            st.floats(0, 1, width=16),
            st.floats(-2, 300, width=16),
            st.sampled_from([float("nan"), float("inf"), -float("inf")]),
        )
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def _hostile_arrays(draw) -> np.ndarray:
    """Arrays of every rank (0-5), 0-size and 1x1 sides, many dtypes and memory layouts."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # Categories from the seed too: Hypothesis's own choices crowd into a few of them.
    form = rng.choice(["image"] * 6 + ["1-3 px", "0-size side", "any rank"])
    if form == "any rank":
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=5)))
    else:  # (H, W) or (H, W, C)
        h, w = rng.integers(4, 65, 2).tolist()
        if form == "1-3 px":
            h, w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        elif form == "0-size side":
            h, w = draw(st.sampled_from([(0, w), (h, 0), (0, 0)]))
        channels = rng.choice([None, None, None, 3, 3, 4, 4, 1, 2, 0, 5])
        shape = (h, w) if channels is None else (h, w, channels)
    content = draw(st.sampled_from(["stroke", "stroke", "random", "constant"]))
    if dtype.kind == "b":
        top = True
    elif dtype.kind == "f":
        top = draw(st.sampled_from([255.0, 1.0]))
    elif dtype.kind == "c":
        top = 1.0
    else:
        top = min(draw(st.sampled_from([255, 65535, 1])), np.iinfo(dtype).max)
    a = np.full(shape, top, dtype)
    if content == "stroke" and len(shape) >= 2 and min(shape[:2]) >= 4:
        h, w = shape[:2]
        a[h // 5 : h // 5 + max(1, h // 8), w // 5 : 4 * w // 5] = 0  # a bar and a downstroke
        a[h // 5 : 4 * h // 5, w // 2 : w // 2 + max(1, w // 8)] = 0
    elif content == "random" and a.size:
        if dtype.kind == "b":
            a[...] = rng.random(shape) < 0.5
        elif dtype.kind in "fc":
            a[...] = rng.uniform(-2, 300, shape)
        else:
            info = np.iinfo(dtype)
            a[...] = rng.integers(
                info.min, info.max, shape, endpoint=True, dtype=dtype.newbyteorder("=")
            )
    if dtype.kind == "f" and a.size and draw(st.sampled_from([False, False, False, True])):
        with np.errstate(over="ignore"):
            a.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(SPECIALS))
    layout = draw(st.sampled_from(["C", "F", "reversed", "strided", "broadcast"]))
    if layout == "F":
        a = np.asfortranarray(a)
    elif layout == "reversed" and a.ndim:
        a = a[::-1]
    elif layout == "strided" and a.ndim:
        a = np.repeat(a, 2, axis=0)[::2]
    elif layout == "broadcast" and a.ndim and a.shape[-1]:
        a = np.broadcast_to(a[..., :1], a.shape)  # read-only, stride 0 (channels or columns)
    return a


def image_arrays() -> st.SearchStrategy[np.ndarray]:
    """Image-like arrays: small ones drawn element by element, and hostile ranks, sizes,
    dtypes (both byte orders, complex) and layouts (Fortran, reversed, strided, broadcast)."""
    return st.one_of(_dense_arrays(), _hostile_arrays())


# ----------------------------------------------------------------------------- encoded files

SEEDS = {
    name: (CORPUS / name).read_bytes()
    for name in [
        "digit.png",
        "png-rgba-16bit.png",
        "png-palette-trns.png",
        "png-interlaced.png",
        "png-grey-1bit.png",
        "jpeg-rgb.jpg",
        "jpeg-progressive.jpg",
        "jpeg-cmyk.jpg",
        "webp-lossy.webp",
        "webp-lossless.webp",
        "gif-animated.gif",
        "png-apng.png",
        "bmp-rle8.bmp",
        "bmp-24bit.bmp",
    ]
}
SIZE_WORDS = [0, 1, 255, 4096, 4097, 32768, 65535, 2**31 - 1, 2**32 - 1]


@st.composite
def mutated_files(draw) -> bytes:
    """A valid file with 1-4 edits: cut, bit flip, byte set, insert, delete, repeat, or a
    32-bit/16-bit size-like word written over it (either byte order)."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["cut", "flip", "set", "insert", "delete", "repeat", "word"]))
        if op == "cut":
            del data[at:]
        elif op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "repeat":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            word = draw(st.sampled_from(SIZE_WORDS))
            fmt = draw(st.sampled_from([">I", "<I", ">H", "<H"]))
            data[at : at + struct.calcsize(fmt)] = struct.pack(
                fmt, word % (1 << (8 * struct.calcsize(fmt)))
            )
    return bytes(data)
