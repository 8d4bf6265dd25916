"""Bad input never crashes serving: property tests and a replayable corpus (issue 6).

Every case ends in a valid (28, 28) float32 image in [0, 1] or a clear ImageInputError: for
models a ModelLoadError, from `flaxdigits predict` one JSON {"file", "error"} line. Never another
exception, a traceback, a hang or a memory blow-up. Hypothesis runs derandomized, so every run
tries the same examples; tests/corpus/ holds hostile files built by tests/corpus/make_corpus.py.
Bombs and huge canvases run in a subprocess that measures each case's peak RSS growth. Run with
`--hypothesis-show-statistics -s` for the outcome counts behind RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
import pytest
import toy_onnx
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnx.external_data_helper import set_external_data
from PIL import Image

from flaxdigits.serve import predictor as predictor_module
from flaxdigits.serve import spec
from flaxdigits.serve.cli import predict_files
from flaxdigits.serve.predictor import ModelLoadError, Predictor
from flaxdigits.serve.preprocess import (
    EmptyCanvasError,
    ImageInputError,
    preprocess,
)

CORPUS = Path(__file__).parent / "corpus"
INDEX = json.loads((CORPUS / "index.json").read_text())["cases"]
CASE_SECONDS = 20.0  # per case, on a busy 2-core machine: a hang, not a slow decode
MAX_GROWTH_MB = 500  # peak RSS growth allowed for one case (inputs themselves excluded)


def fuzz(examples: int):
    """Hypothesis settings for this file: the same examples every run, no example database."""
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


with Image.open(CORPUS / "digit.png") as _digit:
    MASK = np.asarray(_digit) < 128  # the corpus's '7', (40, 40) bool ink


# ------------------------------------------------------------------------------------ arrays

DTYPES = [
    "?", "u1", "i1", "<u2", ">u2", "<i2", ">i2", "<u4", ">i4", "<i8", "<u8",
    "<f2", "<f4", ">f4", "<f8", ">f8", "<c8",
]  # fmt: skip
SPECIALS = [np.nan, np.inf, -np.inf, -1.0, 256.0, 70000.0, -0.0, 1e-40, 1e30]


@st.composite
def image_arrays(draw) -> np.ndarray:
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


@fuzz(300)
@given(image_arrays(), st.sampled_from(["mnist", "seed"]))
def test_arrays_of_any_rank_shape_dtype_and_layout_end_valid_or_refused(array, method):
    before = array.copy()
    outcome(array, method)
    np.testing.assert_array_equal(array, before)  # the caller's array is never modified


def test_huge_virtual_arrays_are_refused_before_any_copy():
    # A stride-0 view: 10^12 elements that were never allocated; refused on its shape alone.
    for shape in [
        (10**6, 10**6),
        (10**6, 10**6, 4),
        (4097, 4096),
        (1, 4096 * 4096 + 1),
        (1, 20_000),
    ]:
        with pytest.raises(ImageInputError, match="pixel limit"):
            preprocess(np.broadcast_to(np.float64(0.5), shape))


def test_big_endian_uint16_is_read_as_sixteen_bit():
    # Was refused as "values span [0, 65535]: expected [0, 255]": dtype == np.uint16 is False
    # for ">u2" on a little-endian machine.
    canvas = np.where(MASK, 0, 65535).astype(">u2")
    reference = preprocess(np.where(MASK, 0, 255).astype(np.uint8)).image
    np.testing.assert_array_equal(preprocess(canvas).image, reference)


# -------------------------------------------------------------------------------- PIL modes

MODES = [
    "1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
    "HSV", "I", "I;16", "I;16B", "I;16L", "I;16N", "F",
]  # fmt: skip


@st.composite
def pil_images(draw) -> Image.Image:
    """PIL images of every mode with random or drawn content, random palettes, transparency."""
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = len(Image.new(mode, size).tobytes())
    if draw(st.booleans()):
        img = Image.frombytes(mode, size, rng.bytes(n))
    else:  # the digit drawn in this mode's own values
        img = Image.new(mode, size, draw(st.sampled_from([0, 1, 255, 65535])))
        ink = Image.fromarray(MASK).resize(size).convert("L")
        img.paste(Image.new(mode, size, 0), mask=ink)
    if mode in ("P", "PA"):
        img.putpalette(rng.bytes(768))
    if mode in ("P", "L", "RGB") and draw(st.booleans()):
        img.info["transparency"] = (
            draw(st.integers(0, 255)) if mode != "RGB" else tuple(rng.integers(0, 256, 3).tolist())
        )
    return img


@fuzz(250)
@given(pil_images(), st.sampled_from(["mnist", "seed"]))
def test_pil_images_of_every_mode_end_valid_or_refused(img, method):
    outcome(img, method)


# --------------------------------------------------------------------------- editor values

DIGIT_PNG = (CORPUS / "digit.png").read_bytes()
LEAVES = {
    "grey digit": np.where(MASK, 0, 255).astype(np.uint8),
    "sketchpad layer": np.dstack(
        [np.zeros((40, 40, 3), np.uint8), np.where(MASK, 255, 0).astype(np.uint8)]
    ),
    "transparent 7x90": np.zeros((7, 90, 4), np.uint8),
    "0x5 RGBA": np.zeros((0, 5, 4), np.uint8),
    "PIL white 120x30": Image.new("RGBA", (120, 30), (255, 255, 255, 255)),
    "PIL digit": Image.fromarray(np.where(MASK, 0, 255).astype(np.uint8)),
    "PNG bytes": DIGIT_PNG,
    "junk bytes": b"not an image",
    "digit path": str(CORPUS / "digit.png"),
    "bomb path": str(CORPUS / "bomb-png-100000x100000.png"),
    "missing path": "/nonexistent/x.png",
    "int": 42,
    "float": 3.5,
    "nested list": [[0, 255]],
}
leaf_values = st.one_of(st.none(), st.sampled_from(sorted(LEAVES)).map(LEAVES.__getitem__))
EDITOR_KEYS = st.sampled_from(["background", "layers", "composite", "id"])
layer_lists = st.one_of(st.lists(leaf_values, max_size=3), st.tuples(leaf_values, leaf_values))
editors = st.dictionaries(EDITOR_KEYS, st.one_of(leaf_values, layer_lists), max_size=4)
editor_values = st.one_of(  # leaves, editor values, and editor values holding editor values
    leaf_values,
    editors,
    st.dictionaries(EDITOR_KEYS, st.one_of(editors, st.lists(editors, max_size=2)), max_size=3),
)


@fuzz(200)
@given(editor_values)
def test_editor_values_and_anything_else_end_valid_or_refused(value):
    outcome(value)


def test_cyclic_and_deep_editor_values_are_refused_not_recursed():
    cyclic = {"background": None, "layers": [], "composite": None}
    cyclic["composite"] = cyclic  # was RecursionError
    deep = {"composite": None, "layers": [], "background": None}
    for _ in range(5000):
        deep = {"composite": deep}
    for value in (cyclic, deep, {"layers": 5}, {"layers": np.zeros((2, 9, 9))}):
        with pytest.raises(ImageInputError):  # {"layers": 5} was TypeError
            preprocess(value)


# ---------------------------------------------------------------------------- encoded bytes

MAGIC = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    b"RIFF\x00\x10\x00\x00WEBPVP8L",
    b"BM",
]


@fuzz(300)
@given(st.sampled_from(MAGIC), st.binary(max_size=2048))
def test_random_bytes_end_valid_or_refused(magic, tail):
    outcome(magic + tail)


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


@fuzz(300)
@given(mutated_files())
def test_truncated_and_corrupt_files_end_valid_or_refused(data):
    outcome(data)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # "Corrupt EXIF data"
@fuzz(150)
@given(
    st.sampled_from([b"II*\x00\x08\x00\x00\x00", b"MM\x00*\x00\x00\x00\x08", b""]),
    st.binary(max_size=300),
)
def test_any_exif_block_ends_valid_or_refused(head, body):
    exif = head + body
    png = (CORPUS / "digit.png").read_bytes()
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    outcome(png[:33] + chunk + png[33:])  # after IHDR: exif_transpose reads it


# --------------------------------------------------------------------- corpus, in isolation

HARNESS = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    from PIL import Image
    from flaxdigits.serve.preprocess import (
        EmptyCanvasError, ImageInputError, load_image_file, preprocess)

    def rss_mb(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024

    def reset_peak():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def huge(name):
        side = 4096
        rows = np.arange(side) * 40 // side
        grey = np.asarray(Image.open(sys.argv[2] + "/digit.png"))
        ink = grey[rows][:, rows] < 128  # (4096, 4096) bool
        alpha = np.where(ink, 255, 0).astype(np.uint8)
        return {
            "uint8 RGBA 4096x4096, ink in alpha": lambda: np.dstack(
                [np.zeros((side, side, 3), np.uint8), alpha]),
            "float64 RGBA 4096x4096 [0, 1]": lambda: np.dstack(
                [np.where(ink, 0.0, 1.0)] * 3 + [np.ones((side, side))]),
            "float32 4096x4096 [0, 255]": lambda: np.where(ink, 0, 255).astype(np.float32),
            "int64 4096x4096": lambda: np.where(ink, 0, 255).astype(np.int64),
            "bool 4096x4096": lambda: ~ink,
            "uint16 RGB 4096x4096": lambda: np.dstack([np.where(ink, 0, 65535)] * 3).astype(
                np.uint16),
            "uint8 16384x1024": lambda: np.where(ink.reshape(16384, 1024), 0, 255).astype(
                np.uint8),
            "uint8 1024x16384": lambda: np.where(ink.reshape(1024, 16384), 0, 255).astype(
                np.uint8),
            "uint8 1x16777216 (a side over the limit)": lambda: np.full(
                (side * side, 1), 255, np.uint8),
            "uint8 4097x4096 (over the cap)": lambda: np.zeros((side + 1, side), np.uint8),
            "PIL RGBA 4096x4096": lambda: Image.fromarray(np.dstack(
                [np.zeros((side, side, 3), np.uint8), alpha])),
            "PIL I;16 4096x4096": lambda: Image.fromarray(np.where(ink, 0, 65535).astype(
                np.uint16)),
            "PIL F 4096x4096": lambda: Image.fromarray(np.where(ink, 0, 1).astype(np.float32)),
            "editor: background + 3 layers, 4096x4096, no composite": lambda: {
                "background": np.full((side, side, 3), 255, np.uint8),
                "layers": [np.dstack([np.zeros((side, side, 3), np.uint8), alpha])] + [
                    np.zeros((side, side, 4), np.uint8)] * 2,
                "composite": None},
        }[name]()

    exact = reset_peak()
    results = []
    reference = preprocess(load_image_file(sys.argv[2] + "/digit.png")).image
    for case in json.loads(sys.argv[1]):
        value = huge(case["huge"]) if "huge" in case else None
        before = rss_mb("VmRSS:")
        exact = reset_peak()
        start_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        try:
            if value is None:
                value = load_image_file(sys.argv[2] + "/" + case["file"])
            image = preprocess(value).image
            ok = (image.shape == (28, 28) and image.dtype == np.float32
                  and bool(np.isfinite(image).all()) and image.min() >= 0 and image.max() <= 1)
            diff = float(np.abs(image - reference).mean())
            got, message = ("ok" if ok else "invalid output"), f"mean |diff| {diff:.3f}"
        except EmptyCanvasError as e:
            got, message = "empty", str(e)
        except ImageInputError as e:
            got, message = "error", str(e)
        except BaseException as e:
            got, message = "crash", f"{type(e).__name__}: {e}"
        elapsed = time.perf_counter() - t
        if exact:
            peak = rss_mb("VmHWM:")
        else:  # no clear_refs: the process-wide peak, an overestimate after a larger case
            peak = max(start_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        del value
        results.append({**case, "got": got, "message": message[:300], "seconds": elapsed,
                        "growth_mb": max(0.0, peak - before), "exact_rss": exact})
    print(json.dumps(results))
    """
)
HUGE = [
    "uint8 RGBA 4096x4096, ink in alpha",
    "float64 RGBA 4096x4096 [0, 1]",
    "float32 4096x4096 [0, 255]",
    "int64 4096x4096",
    "bool 4096x4096",
    "uint16 RGB 4096x4096",
    "uint8 16384x1024",
    "uint8 1024x16384",
    "uint8 1x16777216 (a side over the limit)",
    "uint8 4097x4096 (over the cap)",
    "PIL RGBA 4096x4096",
    "PIL I;16 4096x4096",
    "PIL F 4096x4096",
    "editor: background + 3 layers, 4096x4096, no composite",
]
HUGE_EXPECT = {
    "uint8 4097x4096 (over the cap)": "error",
    "uint8 1x16777216 (a side over the limit)": "error",
}


def run_harness(cases: list[dict]) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-c", HARNESS, json.dumps(cases), str(CORPUS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def matches(expect: str, got: str, message: str) -> bool:
    """Whether a corpus result is what index.json promised."""
    if expect == "match":
        return got == "ok" and float(message.split()[-1]) < 0.03
    if expect == "any":
        return got in ("ok", "empty", "error")
    return got == expect


@pytest.mark.timeout(600)
def test_corpus_and_huge_canvases_end_as_listed_within_time_and_memory():
    cases = [{"file": e["file"], "family": e["family"], "expect": e["expect"]} for e in INDEX]
    cases += [{"huge": name, "family": "huge canvas", "expect": HUGE_EXPECT.get(name, "ok")}
              for name in HUGE]  # fmt: skip
    results = run_harness(cases)
    assert len(results) == len(cases)
    wrong = [r for r in results if not matches(r["expect"], r["got"], r["message"])]
    slow = [r for r in results if r["seconds"] > CASE_SECONDS]
    fat = [r for r in results if r["growth_mb"] > MAX_GROWTH_MB]
    assert not wrong, json.dumps(wrong, indent=1)
    assert not slow, json.dumps(slow, indent=1)
    assert not fat, json.dumps(fat, indent=1)
    families: dict[str, dict[str, int]] = {}
    for r in results:
        counts = families.setdefault(r["family"], {})
        counts[r["got"]] = counts.get(r["got"], 0) + 1
    worst = max(results, key=lambda r: r["growth_mb"])
    print(f"\ncorpus: {len(results)} cases {families}")
    print(
        f"largest RSS growth {worst['growth_mb']:.0f} MB ({worst.get('file', worst.get('huge'))})"
    )
    print(f"slowest {max(r['seconds'] for r in results):.2f} s")


def test_corpus_is_what_make_corpus_builds(tmp_path):
    script = CORPUS / "make_corpus.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, timeout=120)
    built = json.loads((tmp_path / "index.json").read_text())
    committed = json.loads((CORPUS / "index.json").read_text())
    strip = [{k: v for k, v in e.items() if k not in ("bytes", "sha256")} for e in built["cases"]]
    assert strip == [{k: v for k, v in e.items() if k not in ("bytes", "sha256")} for e in INDEX]
    for entry in INDEX:  # the files are the ones index.json describes
        data = (CORPUS / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
    if built["built_with"] == committed["built_with"]:  # same zlib and Pillow: same bytes
        assert built["cases"] == committed["cases"]
    assert sum(e["bytes"] for e in INDEX) < 300_000


# --------------------------------------------------------------------------- configure_pillow

CONFIGURE = textwrap.dedent(
    """
    import io, json, sys, warnings
    from PIL import Image, UnidentifiedImageError
    from flaxdigits.serve import preprocess as pp

    corpus = sys.argv[1]
    pp.configure_pillow()
    pp.configure_pillow()  # idempotent
    report = {}

    def attempt(name, **kwargs):
        # Image.open exactly as Gradio calls it: a path, no format list
        try:
            with Image.open(corpus + "/" + name, **kwargs) as img:
                img.load()
            return "opened"
        except UnidentifiedImageError:
            return "unidentified"
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return "bomb"
        except Exception as e:
            return type(e).__name__

    for name in ["foreign-tif.png", "foreign-eps.png", "foreign-ico.png", "foreign-pdf.png",
                 "foreign-qoi.png", "foreign-dds.png", "bomb-png-5000x5000.png",
                 "bomb-png-10000x10000.png", "bomb-png-4097x4096.png",
                 "large-png-4096x4096-1bit.png", "digit.png", "jpeg-cmyk.jpg",
                 "webp-animated.webp", "gif-animated.gif", "bmp-rle8.bmp", "jpeg-mpo.jpg"]:
        report[name] = attempt(name)
    report["tif with formats=['TIFF']"] = attempt("foreign-tif.png", formats=["TIFF"])
    with open(corpus + "/digit.png", "rb") as f:
        report["preprocess digit bytes"] = pp.preprocess(f.read()).image.shape == (28, 28)
    try:
        pp.load_image_file(corpus + "/bomb-png-5000x5000.png", max_pixels=10**9)
    except pp.ImageInputError as e:
        report["load_image_file bomb"] = str(e)
    for bad in [0, -1, 2.5, True]:
        try:
            pp.configure_pillow(max_pixels=bad)
        except ValueError:
            report[f"max_pixels={bad}"] = "ValueError"
    print(json.dumps(report))
    """
)


def test_configure_pillow_holds_every_decode_in_the_process_to_our_limits():
    proc = subprocess.run(
        [sys.executable, "-c", CONFIGURE, str(CORPUS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(proc.stdout)
    foreign = ["tif", "eps", "ico", "pdf", "qoi", "dds"]
    assert all(report[f"foreign-{ext}.png"] == "unidentified" for ext in foreign), report
    assert report["tif with formats=['TIFF']"] == "unidentified"
    # 25M and 16.8M pixels: only Pillow's warning range, now an error; 10^8: Pillow's error.
    for name in ["bomb-png-5000x5000.png", "bomb-png-4097x4096.png", "bomb-png-10000x10000.png"]:
        assert report[name] == "bomb", (name, report[name])
    accepted = ["large-png-4096x4096-1bit.png", "digit.png", "jpeg-cmyk.jpg", "jpeg-mpo.jpg"]
    accepted += ["webp-animated.webp", "gif-animated.gif", "bmp-rle8.bmp"]
    assert all(report[name] == "opened" for name in accepted), report
    assert report["preprocess digit bytes"] is True
    assert "decompression bomb" in report["load_image_file bomb"]
    assert all(report[f"max_pixels={bad}"] == "ValueError" for bad in [0, -1, 2.5, True])
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr


# -------------------------------------------------------------------------------- the CLI


def toy_model_bytes(labels: str | None = None) -> bytes:
    """The shared toy model (3 for any ink), optionally with a labels metadata value."""
    return toy_onnx.toy_model_bytes(metadata=None if labels is None else {spec.META_LABELS: labels})


def write_with_manifest(directory: Path, data: bytes, name: str = "mlp") -> Path:
    """NAME.onnx and its NAME.json manifest entry for exactly these bytes."""
    path = directory / f"{name}.onnx"
    path.write_bytes(data)
    entry = {"file": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    doc = {"schema": spec.MANIFEST_SCHEMA, "model": name, "files": [entry]}
    (directory / f"{name}.json").write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "toy.onnx"
    path.write_bytes(toy_model_bytes())
    return path


def test_predict_cli_over_the_whole_corpus_prints_one_json_line_per_file(toy_model):
    files = [str(CORPUS / e["file"]) for e in INDEX] + [str(CORPUS / "missing.png"), str(CORPUS)]
    proc = subprocess.run(
        [sys.executable, "-m", "flaxdigits.cli", "predict", "--json", "--model", str(toy_model)]
        + files,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr == ""  # no traceback, and no Pillow warning either
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["file"] for r in records] == files
    for entry, record in zip(INDEX, records, strict=False):
        if entry["expect"] in ("match", "ok"):
            assert record.get("digit") == 3, record
        elif entry["expect"] == "empty":
            assert record == {"file": record["file"], "error": preprocess_empty_message()}
        elif entry["expect"] == "error":
            assert set(record) == {"file", "error"} and record["error"], record
        else:
            assert set(record) in (
                {"file", "error"},
                {"file", "digit", "confidence", "probabilities"},
            )
    assert records[-2]["error"] == "no such file" and records[-1]["error"] == "is a directory"


def preprocess_empty_message() -> str:
    return str(EmptyCanvasError())


@fuzz(100)
@given(st.lists(st.one_of(mutated_files(), st.none()), min_size=1, max_size=3))
def test_predict_cli_reports_each_hostile_file_on_its_own_line(toy_model, contents):
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, data in enumerate(contents):
            path = os.path.join(tmp, f"{i}.png")
            if data is not None:  # None: a path that does not exist
                Path(path).write_bytes(data)
            files.append(path)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = predict_files(str(toy_model), files, as_json=True)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["file"] for r in records] == files and err.getvalue() == ""
    failed = ["error" in r for r in records]
    assert status == (1 if any(failed) else 0)
    for r in records:
        assert set(r) in ({"file", "error"}, {"file", "digit", "confidence", "probabilities"})
        event("error line" if "error" in r else "prediction line")


def test_undecodable_file_names_do_not_stop_readable_output(toy_model, tmp_path):
    # b"\xff.png" reaches Python as "\udcff.png": printing it to a strict UTF-8 stdout raised
    # UnicodeEncodeError, which ended the whole run after the files before it.
    name = os.fsdecode(b"\xff.png")
    (tmp_path / name).write_bytes(DIGIT_PNG)
    files = [str(tmp_path / name), str(tmp_path / "a\nb.png"), str(tmp_path / name)]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    script = "import sys; from flaxdigits.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", script, "predict", "--model", str(toy_model), *files],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert out.count("\\udcff.png: 3 (confidence") == 2 and len(out.splitlines()) == 2
    assert len(err.splitlines()) == 1 and "a\\nb.png: error: no such file" in err


# ------------------------------------------------------------------------------------ models


@contextlib.contextmanager
def no_parsers():
    """Any call of onnx.checker or onnxruntime fails the test: the model is refused before."""
    boom = AssertionError("a parser was reached")
    with (
        mock.patch.object(predictor_module, "_onnx_check", side_effect=boom),
        mock.patch.object(predictor_module, "_session", side_effect=boom),
    ):
        yield


GOOD_MODEL = toy_model_bytes()


@fuzz(200)
@given(
    st.sampled_from(["cut", "flip", "append", "insert"]),
    st.integers(0, len(GOOD_MODEL) - 1),
    st.integers(1, 255),
)
def test_changed_model_with_its_manifest_is_refused_before_any_parser(op, at, value):
    data = bytearray(GOOD_MODEL)
    if op == "cut":
        del data[at:]
    elif op == "flip":
        data[at] ^= value
    elif op == "append":
        data += bytes([value]) * (at % 64 + 1)
    else:
        data[at:at] = bytes([value])
    with tempfile.TemporaryDirectory() as tmp:
        path = write_with_manifest(Path(tmp), GOOD_MODEL)  # the manifest of the good model
        path.write_bytes(bytes(data))
        with no_parsers(), pytest.raises(ModelLoadError, match="does not match|empty file"):
            Predictor(path)
    event(op)


def external_model() -> onnx.ModelProto:
    model = onnx.load_model_from_string(GOOD_MODEL)
    weights = model.graph.initializer[0]
    set_external_data(weights, location="../../../etc/passwd", offset=0, length=3136)
    weights.ClearField("raw_data")
    return model


def test_external_data_is_refused_before_any_parser_even_with_a_true_manifest(tmp_path):
    located = external_model()
    bare = onnx.load_model_from_string(GOOD_MODEL)
    bare.graph.initializer[0].data_location = TensorProto.EXTERNAL  # no location entry at all
    bare.graph.initializer[0].ClearField("raw_data")
    for model, match in [(located, "etc/passwd"), (bare, "data_location=EXTERNAL")]:
        path = write_with_manifest(tmp_path, model.SerializeToString())  # a manifest that agrees
        with no_parsers(), pytest.raises(ModelLoadError, match=f"external data.*{match}"):
            Predictor(path)


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def nested_graphs(depth: int) -> bytes:
    """ModelProto.graph -> node -> attribute.g -> node -> ... `depth` graphs deep."""
    msg = b""
    for _ in range(depth):
        graph = b"\x0a" + varint(len(msg)) + msg if msg else b""  # Graph.node (1): Node
        attribute = b"\x32" + varint(len(graph)) + graph  # Attribute.g (6): Graph
        msg = b"\x2a" + varint(len(attribute)) + attribute  # Node.attribute (5)
    graph = b"\x0a" + varint(len(msg)) + msg
    return b"\x3a" + varint(len(graph)) + graph  # Model.graph (7)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (nested_graphs(100), "nesting too deep"),
        (nested_graphs(20_000), "nesting too deep"),
        (b"\x3a" + varint(2**62) + b"\x00" * 16, "truncated or malformed"),
        (b"\x3a" + b"\xff" * 11, "truncated or malformed"),
        (b"\x3b" + b"\x00" * 8, "wire type 3"),
        (b"\x08" + b"\x80" * 4, "truncated or malformed"),
        ((CORPUS / "digit.png").read_bytes(), "not a valid ONNX"),
        (b"PK\x03\x04" + b"\x00" * 60, "not a valid ONNX"),  # a zip (a PyTorch .pt)
        (b"\x80\x04\x95" + b"\x00" * 30, "not a valid ONNX"),  # a pickle's first bytes
        (b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40, "not a valid ONNX"),  # a TFLite flatbuffer
    ],
    ids=[
        "100 graphs deep",
        "20000 graphs deep",
        "length 2^62",
        "11-byte varint",
        "group wire type",
        "cut varint",
        "PNG",
        "zip",
        "pickle",
        "TFLite",
    ],
)
def test_protobuf_bombs_and_foreign_files_are_refused_by_the_wire_walk(tmp_path, data, match):
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with no_parsers(), pytest.raises(ModelLoadError, match=match):
        Predictor(path, manifest=None)


@pytest.mark.parametrize(
    "manifest",
    [
        b"[" * 100_000,  # was RecursionError
        b'{"schema": "flaxdigits.manifest.v1", "files": [{"size": ' + b"9" * 5000 + b"}]}",
        b"\xff\xfe{}",
        b"null",
        b"[]",
        b'{"schema": "flaxdigits.manifest.v1", "files": "mlp.onnx"}',
        b'{"schema": "flaxdigits.manifest.v1", "files": [1, null, "mlp.onnx"]}',
        b'{"schema": "flaxdigits.manifest.v1", "files": [{"file": "mlp.onnx", "size": "3"}]}',
        b'{"schema": "flaxdigits.manifest.v1", "files": [{"file": "mlp.onnx", "sha256": 1}]}',
        b" " * (1024 * 1024 + 1),
    ],
    ids=[
        "nested 100000",
        "5000-digit number",
        "not UTF-8",
        "null",
        "list",
        "files a string",
        "entries not objects",
        "size a string",
        "sha256 a number",
        "over 1 MB",
    ],
)
def test_hostile_manifests_are_one_clear_error(tmp_path, capsys, manifest):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(GOOD_MODEL)
    (tmp_path / "mlp.json").write_bytes(manifest)
    with no_parsers(), pytest.raises(ModelLoadError, match="mlp.json|mlp.onnx"):
        Predictor(path)
    assert predict_files(path, [str(CORPUS / "digit.png")], as_json=True) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("flaxdigits predict: error")


@pytest.mark.parametrize(
    "labels",
    ["[" * 100_000, "1" * 5000, "\x00", json.dumps(["0"] * 10)],
    ids=["nested 100000", "5000-digit number", "NUL", "ten zeros"],
)
def test_hostile_label_metadata_is_a_model_load_error(tmp_path, labels):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(toy_model_bytes(labels))
    with pytest.raises(ModelLoadError, match="labels") as info:
        Predictor(path)  # "[" * 100000 was RecursionError, "1" * 5000 a bare ValueError
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("hide_onnx", [False, True], ids=["with onnx", "without onnx"])
def test_model_with_metadata_that_is_not_utf8_is_a_model_load_error(tmp_path, hide_onnx):
    # Was UnicodeDecodeError from onnxruntime's custom_metadata_map: found by the fuzz below.
    model = onnx.load_model_from_string(GOOD_MODEL)
    model.metadata_props.add(key="note", value="XX-MARKER")
    data = model.SerializeToString().replace(b"XX-MARKER", b"\xff\xfe-MARKER")
    path = tmp_path / "mlp.onnx"
    path.write_bytes(data)
    with mock.patch.dict(sys.modules, {"onnx": None} if hide_onnx else {}):
        with pytest.raises(ModelLoadError, match="not UTF-8"):
            Predictor(path, manifest=None)


def test_a_model_onnxruntime_refuses_prints_nothing_on_stdout(tmp_path):
    # A node whose op type is not UTF-8: onnxruntime's error cannot be decoded, it prints an
    # "EP Error ... Falling back" banner on stdout, retries, and fails again. Found by the fuzz
    # below; stdout then held 4 lines that were not JSON. Without onnx, as on a board.
    model = onnx.load_model_from_string(GOOD_MODEL)
    model.graph.node[1].op_type = "GemmXX-MARK"
    path = tmp_path / "mlp.onnx"
    path.write_bytes(model.SerializeToString().replace(b"XX-MARK", b"\xff\xfe-MARK"))
    script = (
        "import sys; sys.modules['onnx'] = None; from flaxdigits.cli import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    args = ["predict", "--json", "--model", str(path), str(CORPUS / "digit.png")]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr.startswith("flaxdigits predict: error: ")
    assert len(proc.stderr.splitlines()) == 1 and "onnxruntime cannot load" in proc.stderr


MODEL_FUZZ = textwrap.dedent(
    """
    import json, random, sys, time
    from pathlib import Path
    import numpy as np
    import onnx
    from flaxdigits.serve.predictor import ModelLoadError, Predictor

    good = Path(sys.argv[1]).read_bytes()
    out_dir = Path(sys.argv[2])
    rng = random.Random(int(sys.argv[3]))
    weights = onnx.load_model_from_string(good).graph.initializer[0].raw_data
    blob = (good.index(weights), good.index(weights) + len(weights))
    structure = [i for i in range(len(good)) if not blob[0] <= i < blob[1]]
    foreign = [p.read_bytes() for p in sorted(Path(sys.argv[4]).iterdir()) if p.is_file()]
    stages, slowest = {}, 0.0
    for i in range(int(sys.argv[5])):
        if i < len(foreign):
            data = foreign[i]  # every corpus file, offered as a model
        else:
            data = bytearray(good)
            for _ in range(rng.randint(1, 3)):
                # mostly the graph, names and metadata: the weights are 98% of the bytes
                at = rng.choice(structure) if rng.random() < 0.8 else rng.randrange(len(data))
                at = min(at, len(data) - 1)
                op = rng.choice(["flip", "flip", "set", "set", "cut", "insert", "delete"])
                if op == "flip":
                    data[at] ^= 1 << rng.randrange(8)
                elif op == "set":
                    data[at] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
                elif op == "cut":
                    del data[max(at, 1):]
                elif op == "insert":
                    data[at:at] = rng.randbytes(rng.randint(1, 8))
                else:
                    del data[at : at + rng.randint(1, 8)]
        # Every other case without the onnx package, as on a board: onnxruntime parses alone.
        sys.modules["onnx"] = None if i % 2 else onnx
        path = out_dir / "fuzzed.onnx"
        path.write_bytes(bytes(data))
        t = time.perf_counter()
        try:
            p = Predictor(path, manifest=None)
            probs = p.predict(np.zeros((28, 28), np.float32)).probabilities
            assert len(probs) == 10
            stage = "loaded and predicted"
        except ModelLoadError as e:
            text = str(e)
            assert "Traceback" not in text and "\\n" not in text, text
            stage = ("refused: names or metadata not UTF-8" if "not UTF-8" in text else
                     "refused: wire walk" if "not a valid ONNX file" in text else
                     "refused: onnx.checker" if "not a valid ONNX model" in text else
                     "refused: onnxruntime" if "onnxruntime" in text else
                     "refused: I/O or metadata checks")
        slowest = max(slowest, time.perf_counter() - t)
        stages[stage] = stages.get(stage, 0) + 1
    print(json.dumps({"stages": stages, "slowest": slowest}))
    """
)


@pytest.mark.timeout(300)
def test_mutated_and_foreign_models_without_manifest_load_or_refuse_cleanly(tmp_path):
    # In a subprocess: onnx and onnxruntime parse these, and a native crash must fail the test,
    # not end pytest.
    good = tmp_path / "good.onnx"
    good.write_bytes(GOOD_MODEL)
    cases = len(INDEX) + 400  # every corpus file, then 400 mutations
    proc = subprocess.run(
        [sys.executable, "-c", MODEL_FUZZ, str(good), str(tmp_path), "6", str(CORPUS), str(cases)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    report = json.loads(proc.stdout)
    assert sum(report["stages"].values()) == cases
    assert report["slowest"] < CASE_SECONDS
    print(f"\nmodels: {cases} cases {report['stages']}, slowest {report['slowest']:.2f} s")
