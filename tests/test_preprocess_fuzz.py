"""Bad input never crashes preprocessing: arrays, PIL images of every mode, editor values, the
hostile corpus and huge canvases end in a valid image or a clear ImageInputError (issue 6).

Strategies and the outcome check are tests/strategies.py's. Bombs and huge canvases run in a
subprocess that measures each case's peak RSS growth.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from flaxdigits.serve.runtime.decode import ImageInputError
from flaxdigits.serve.runtime.preprocess import preprocess
from tests.programs import command
from tests.support.strategies import (
    CASE_SECONDS,
    CORPUS,
    DIGIT_PNG,
    INDEX,
    MASK,
    fuzz,
    image_arrays,
    outcome,
)

MAX_GROWTH_MB = 500  # peak RSS growth allowed for one case (inputs themselves excluded)


# ------------------------------------------------------------------------------------ arrays


@fuzz(300)
@given(image_arrays(), st.sampled_from(["mnist", "box"]))
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
@given(pil_images(), st.sampled_from(["mnist", "box"]))
def test_pil_images_of_every_mode_end_valid_or_refused(img, method):
    outcome(img, method)


# --------------------------------------------------------------------------- editor values

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


# --------------------------------------------------------------------- corpus, in isolation

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
        [*command("preprocess_corpus"), json.dumps(cases), str(CORPUS)],
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
