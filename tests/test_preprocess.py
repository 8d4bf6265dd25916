"""Preprocessing: every input kind, polarity and alpha, empty canvases, geometry, bad arrays.

Reading files and bytes is tests/test_decode.py's; hostile inputs are test_preprocess_fuzz.py's.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from flaxdigits.core import contract
from flaxdigits.serve.runtime import decode
from flaxdigits.serve.runtime import preprocess as pp
from flaxdigits.serve.runtime.decode import ImageInputError, load_image_file
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError, Preprocessed, preprocess
from tests.support.drawings import draw_digit, rgba_on_transparent, save
from tests.support.strategies import image_arrays


def assert_valid(result: Preprocessed) -> None:
    assert result.image.shape == (28, 28)
    assert result.image.dtype == np.float32
    assert np.isfinite(result.image).all()
    assert 0.0 <= result.image.min() and result.image.max() <= 1.0
    assert list(result.steps) == ["original", "grayscale", "cropped", "28x28"]
    for step in result.steps.values():
        assert step.dtype == np.uint8 and step.ndim == 2
    np.testing.assert_array_equal(
        result.steps["28x28"], np.rint(result.image * 255).astype(np.uint8)
    )


def input_kinds(ink: np.ndarray, tmp_path) -> dict[str, object]:
    """The same drawing in every accepted representation."""
    rgb = np.repeat(ink[..., None], 3, axis=2)
    png = tmp_path / "digit.png"
    Image.fromarray(ink).save(png)
    return {
        "uint8 (H, W)": ink,
        "uint8 (H, W, 1)": ink[..., None],
        "uint8 (H, W, 3)": rgb,
        "uint8 (H, W, 4) opaque": np.concatenate([rgb, np.full_like(ink[..., None], 255)], 2),
        "uint8 (H, W, 4) transparent": rgba_on_transparent(ink),
        "uint8 (H, W, 2) grey+alpha": np.stack([ink, np.full_like(ink, 255)], 2),
        "float32 [0, 1]": ink.astype(np.float32) / 255,
        "float64 [0, 255]": ink.astype(np.float64),
        "uint16": ink.astype(np.uint16) * 257,
        "bool": ink > 127,
        "PIL L": Image.fromarray(ink),
        "PIL RGB": Image.fromarray(rgb),
        "PIL RGBA": Image.fromarray(rgba_on_transparent(ink)),
        "PIL P": Image.fromarray(rgb).convert("P"),
        "PIL 1": Image.fromarray(ink).convert("1", dither=Image.Dither.NONE),
        "PIL CMYK": Image.fromarray(rgb).convert("CMYK"),
        "PIL I;16": Image.fromarray(ink.astype(np.uint16) * 257),
        "PIL F": Image.fromarray(ink.astype(np.float32)),
        "path str": str(png),
        "pathlib": png,
        "editor composite numpy": {"background": None, "layers": [], "composite": rgb},
        "editor composite PIL": {
            "background": None,
            "layers": None,
            "composite": Image.fromarray(rgba_on_transparent(ink)),
        },
        "editor composite path": {"background": None, "layers": [], "composite": str(png)},
        "editor layers only": {
            "background": None,
            "layers": [rgba_on_transparent(ink)],
            "composite": None,
        },
        "editor background + layers": {
            "background": Image.new("RGB", ink.shape[::-1], "white"),
            "layers": [Image.fromarray(rgba_on_transparent(ink)), None],
            "composite": None,
        },
    }


def test_every_input_kind_gives_the_same_28x28(ink, reference, tmp_path):
    for kind, value in input_kinds(ink, tmp_path).items():
        for method in contract.PREPROCESS_METHODS:
            result = preprocess(value, method)
            assert_valid(result)
            assert result.method == method
            if method == "mnist":
                # bool and "1" binarise the anti-aliased edge; everything else is lossless.
                tol = 0.05 if kind in ("bool", "PIL 1") else 1e-6
                diff = np.abs(result.image - reference).mean()
                assert diff <= tol, f"{kind}: mean abs difference {diff:.4f}"


def test_output_is_mnist_layout_white_digit_centred_by_mass(reference):
    rows, cols = np.nonzero(reference > 0)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (19, 20, 21)
    grid = np.arange(28)
    mass = reference.sum()
    assert abs(reference.sum(1) @ grid / mass - 14) <= 0.5
    assert abs(reference.sum(0) @ grid / mass - 14) <= 0.5
    assert reference.max() == 1.0 and reference[0].max() == 0 and reference[:, 0].max() == 0


def test_seed_method_pads_a_centred_square(ink):
    out = preprocess(ink, "box").image
    rows, cols = np.nonzero(out > 0.05)
    assert rows.max() - rows.min() + 1 in range(19, 23)  # the longer side: 28 / 1.4 = 20
    assert abs((rows.min() + rows.max()) / 2 - 13.5) <= 1
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 1


@pytest.mark.parametrize("method", contract.PREPROCESS_METHODS)
def test_translation_and_canvas_size_do_not_change_the_result(method):
    base = preprocess(draw_digit(), method).image
    for size, offset in [((300, 300), (-60, 40)), ((500, 350), (200, 10)), ((420, 800), (0, 500))]:
        moved = preprocess(draw_digit(size=size, offset=offset), method).image
        np.testing.assert_array_equal(moved, base)


def test_scale_changes_the_result_only_slightly():
    small = preprocess(draw_digit(scale=1.0)).image
    large = preprocess(draw_digit(size=(700, 700), scale=2.5)).image
    assert np.abs(small - large).mean() < 0.03


def test_light_ink_on_dark_canvas_is_detected(ink, reference):
    np.testing.assert_array_equal(preprocess(255 - ink).image, reference)
    dark_grey_bg = (255 - ink) // 2 + 20  # a dim grey stroke on a dark grey board
    assert np.abs(preprocess(dark_grey_bg).image - reference).mean() < 0.02


def test_transparent_canvas_is_not_black_ink(ink, reference):
    black_strokes = rgba_on_transparent(ink, colour=0)  # RGB 0 everywhere, ink only in alpha
    np.testing.assert_array_equal(preprocess(black_strokes).image, reference)
    white_strokes = rgba_on_transparent(ink, colour=255)  # a white brush in a dark theme
    np.testing.assert_array_equal(preprocess(white_strokes).image, reference)


def test_coloured_and_grey_pens_are_stretched_to_full_ink(ink, reference):
    blue = np.where(ink[..., None] < 128, [30, 60, 200], 255).astype(np.uint8)
    assert np.abs(preprocess(blue).image - reference).mean() < 0.02
    grey = np.where(ink < 128, 120, 255).astype(np.uint8)
    assert preprocess(grey).image.max() == 1.0


def test_faint_noise_and_far_speckles_are_ignored(ink, reference):
    rng = np.random.default_rng(0)
    noisy = np.clip(ink.astype(int) - rng.integers(0, 40, ink.shape), 0, 255).astype(np.uint8)
    assert np.abs(preprocess(noisy).image - reference).mean() < 0.01
    speckled = ink.copy()
    speckled[[5, 290, 10, 280], [5, 8, 290, 295]] = 0  # four isolated black pixels in corners
    np.testing.assert_array_equal(preprocess(speckled).image, reference)


@pytest.mark.parametrize(
    "value",
    [
        None,
        {"background": None, "layers": [], "composite": None},
        {"background": None, "layers": None, "composite": None},
        np.full((280, 280), 255, np.uint8),
        np.zeros((280, 280), np.uint8),
        np.zeros((280, 280, 4), np.uint8),  # fully transparent, hidden RGB black
        np.full((280, 280, 3), 0.5, np.float32),
        np.random.default_rng(0).integers(215, 256, (280, 280)).astype(np.uint8),  # faint noise
        Image.new("RGBA", (400, 400), (255, 255, 255, 0)),
    ],
    ids=[
        "None",
        "editor all None",
        "editor layers None",
        "white",
        "black",
        "transparent",
        "grey",
        "faint noise",
        "PIL transparent",
    ],
)
def test_empty_canvas_is_reported_not_guessed(value):
    with pytest.raises(EmptyCanvasError, match="^Draw a digit first: the canvas is empty.$"):
        preprocess(value)


def test_a_stray_dot_is_an_empty_canvas():
    canvas = np.full((600, 600), 255, np.uint8)
    canvas[300:306, 300:306] = 0
    with pytest.raises(EmptyCanvasError):
        preprocess(canvas)


def test_mnist_digits_survive_the_mnist_recipe_almost_unchanged(mnist):
    digits = mnist.test_images[:200]
    out = np.stack([preprocess(d).image for d in digits])
    diff = np.abs(out - digits / 255).mean(axis=(1, 2))
    assert np.median(diff) < 0.02 and np.mean(diff) < 0.03


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.full((30, 30), np.nan, np.float32), "NaN or infinite"),
        (np.full((30, 30), np.inf), "NaN or infinite"),
        (np.full((30, 30), -0.5), r"expected \[0, 1\] or \[0, 255\]"),
        (np.full((30, 30), 300.0), r"expected \[0, 1\] or \[0, 255\]"),
        (np.full((30, 30), 1000, np.int32), r"expected \[0, 255\]"),
        (np.zeros((30, 30, 5), np.uint8), "shape"),
        (np.zeros((30,), np.uint8), "shape"),
        (np.zeros((2, 30, 30, 1), np.uint8), "shape"),
        (np.zeros((0, 30), np.uint8), "empty"),
        (np.zeros((30, 30), np.complex64), "dtype"),
        (np.zeros((30, 30), object), "dtype"),
        ([[0, 255], [255, 0]], "unsupported input list"),
        (42, "unsupported input int"),
    ],
)
def test_bad_arrays_raise_image_input_error(value, match):
    with pytest.raises(ImageInputError, match=match):
        preprocess(value)


def test_too_many_pixels_is_refused(monkeypatch):
    monkeypatch.setattr(decode, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ImageInputError, match="pixel limit"):
        preprocess(np.zeros((101, 100), np.uint8))


def test_unknown_method_is_a_plain_value_error(ink):
    with pytest.raises(ValueError, match="unknown preprocessing method") as info:
        preprocess(ink, "bilinear")
    assert not isinstance(info.value, ImageInputError)


# ----------------------------------------------------------------------------- decoded files


def test_sixteen_bit_palette_and_cmyk_files_convert_correctly(ink, reference, tmp_path):
    sixteen = save(Image.fromarray(ink.astype(np.uint16) * 257), tmp_path / "16.png")
    assert load_image_file(sixteen).mode.startswith("I")
    palette = Image.fromarray(rgba_on_transparent(ink)).convert("P")  # keeps transparency
    cmyk = Image.fromarray(np.repeat(ink[..., None], 3, 2)).convert("CMYK")
    for path in [
        sixteen,
        save(palette, tmp_path / "p.png"),
        save(cmyk, tmp_path / "cmyk.jpg", quality=95),
    ]:
        assert np.abs(preprocess(load_image_file(path)).image - reference).mean() < 0.02


# -------------------------------------------------------------------------------- properties


@settings(max_examples=150, deadline=None)
@given(image_arrays(), st.sampled_from(contract.PREPROCESS_METHODS))
def test_any_array_gives_a_valid_image_or_an_image_input_error(array, method):
    try:
        result = preprocess(array, method)
    except ImageInputError:
        return
    assert_valid(result)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(40, 400),
    st.integers(40, 400),
    st.floats(0.05, 0.95),
    st.floats(0.05, 0.95),
    st.floats(0.1, 0.9),
    st.floats(0.1, 0.9),
)
def test_any_blob_is_centred_and_polarity_does_not_matter(h, w, fy, fx, fh, fw):
    canvas = np.full((h, w), 255, np.uint8)
    bh, bw = max(3, int(fh * h)), max(3, int(fw * w))
    top, left = min(int(fy * h), h - bh), min(int(fx * w), w - bw)
    canvas[top : top + bh, left : left + bw] = 0
    canvas[top + bh // 3 : top + bh // 2, left + bw // 3 : left + bw // 2] = 255
    try:
        dark_ink = preprocess(canvas).image
    except EmptyCanvasError:  # a box under MIN_EXTENT of the canvas is a stray mark
        assert max(bh, bw) < pp.MIN_EXTENT * max(h, w) + 2
        return
    assert dark_ink.max() > 0.5  # a thin bar shrinks to a grey anti-aliased line
    grid = np.arange(28)
    assert abs(dark_ink.sum(1) @ grid / dark_ink.sum() - 14) <= 1.0
    np.testing.assert_array_equal(preprocess(255 - canvas).image, dark_ink)
