"""Each preprocessing rule of serve/runtime/preprocess.py on an input built to sit on its edge.

tests/test_preprocess.py checks whole drawings end to end; here every rule the module documents
gets an input where only that rule decides the outcome: editor values composited by hand, each
PIL mode, each array dtype and range, the transparency rule, the border ring, the ink levels, the
empty-canvas thresholds, the speckle filter, the stretch, the 20x20 box placed by mass, the seed
square. Written against the mutants `make mutation` showed surviving (docs/testing.md).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from flaxdigits.serve.runtime import preprocess as pp
from flaxdigits.serve.runtime.decode import ImageInputError
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError, preprocess
from tests.support.drawings import draw_digit, rgba_on_transparent


def _same(a, b) -> None:
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _strokes(size=(200, 200)) -> Image.Image:
    """Black '7' strokes on a transparent canvas (RGBA), as an editor layer."""
    ink = draw_digit(size=size, scale=min(size) / 300)
    return Image.fromarray(rgba_on_transparent(ink), "RGBA")


def _flat(layer: Image.Image, size=None) -> Image.Image:
    """layer composited at the top left of a white canvas of `size` (default: its own)."""
    canvas = Image.new("RGBA", size or layer.size, "white")
    canvas.alpha_composite(layer, (0, 0))
    return canvas.convert("RGB")


# ------------------------------------------------------------------------------ editor values


def test_the_composite_wins_over_background_and_layers():
    composite = _flat(_strokes())
    value = {"composite": composite, "background": Image.new("RGB", (90, 90)), "layers": [None]}
    _same(preprocess(value).image, preprocess(composite).image)


def test_layers_are_composited_over_the_background_in_order():
    background = Image.new("RGB", (200, 200), "white")
    erase = Image.new("RGBA", (200, 200), (255, 255, 255, 0))
    erase.paste((255, 255, 255, 255), (0, 0, 100, 200))  # a later white layer hides the left half
    layers = [_strokes(), None, erase]
    got = preprocess({"background": background, "layers": layers, "composite": None})
    want = _flat(_strokes())
    want.paste((255, 255, 255), (0, 0, 100, 200))
    _same(got.steps["original"], want.convert("L"))


def test_a_smaller_layer_is_anchored_at_the_top_left():
    layer = _strokes((150, 150))
    value = {"background": Image.new("RGB", (300, 240), "white"), "layers": [layer]}
    got = preprocess(value)
    _same(got.steps["original"], _flat(layer, (300, 240)).convert("L"))


def test_without_a_background_the_first_layer_is_the_canvas():
    layer = _strokes()
    got = preprocess({"background": None, "layers": (None, layer), "composite": None})
    _same(got.steps["original"], preprocess(layer).steps["original"])


@pytest.mark.parametrize(
    "value",
    [
        {"background": None, "layers": None, "composite": None},
        {"background": None, "layers": [None, None]},
        {"layers": []},
    ],
)
def test_an_editor_value_with_nothing_in_it_is_an_empty_canvas(value):
    with pytest.raises(EmptyCanvasError, match=f"^{re.escape(pp.EMPTY_MESSAGE)}$"):
        preprocess(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"image": None},
            "unsupported dict: expected a Gradio editor value with background, layers, composite",
        ),
        ({"layers": "a.png"}, "editor layers must be a list of images, got str"),
        ({"layers": [{"layers": []}]}, "an editor value cannot hold another editor value"),
        ({"composite": {"composite": None}}, "an editor value cannot hold another editor value"),
        (3.5, "unsupported input float: expected an image, an array or a file path"),
    ],
)
def test_values_that_are_not_images_are_named(value, message):
    with pytest.raises(ImageInputError, match=f"^{re.escape(message)}$"):
        preprocess(value)


# ----------------------------------------------------------------------------------- PIL modes


def test_premultiplied_la_reads_like_la():
    grey = draw_digit(size=(120, 120), scale=0.4)
    la = Image.merge("LA", [Image.fromarray(grey), Image.new("L", grey.shape[::-1], 255)])
    _same(preprocess(la.convert("La")).steps["original"], preprocess(la).steps["original"])


def test_palette_transparency_is_composited_not_read_as_colour():
    # Index 0 is black and transparent (the background), index 1 black and opaque (the ink):
    # read as colours, the image is black on black, an empty canvas.
    ink = draw_digit(size=(120, 120), scale=0.4) < 128
    img = Image.fromarray(ink.astype(np.uint8), "P")
    img.putpalette([0, 0, 0] * 256)
    img.info["transparency"] = 0
    want = Image.fromarray(np.where(ink, 0, 255).astype(np.uint8))
    _same(preprocess(img).steps["original"], want)


@pytest.mark.parametrize("mode", ["1", "RGB", "CMYK", "P", "I;16", "I", "F"])
def test_every_mode_reads_as_its_grey_levels(mode):
    grey = draw_digit(size=(120, 120), scale=0.4)
    want = preprocess(grey).steps["original"]
    if mode == "1":
        img = Image.fromarray(grey).convert("1")
    elif mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)
    elif mode == "I":
        img = Image.fromarray(grey.astype(np.int32) * 257, "I")
    elif mode == "F":
        img = Image.fromarray(grey.astype(np.float32) / 255, "F")
    else:
        img = Image.fromarray(grey).convert(mode)
    assert img.mode == mode
    _same(preprocess(img).steps["original"], want)


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_images_are_scaled_to_bytes_not_shifted_or_clipped(mode):
    # 200 of 65535 is 0.78 of 255: scaled and rounded it is 1 (a shift by 8 bits gives 0, a
    # clip to 255 gives 200).
    ink = draw_digit(size=(120, 120), scale=0.4) < 128
    img = Image.fromarray(np.where(ink, 200, 65535).astype(np.int32 if mode == "I" else np.uint16))
    assert img.mode == mode
    original = preprocess(img).steps["original"]
    assert set(original[ink].tolist()) == {1} and set(original[~ink].tolist()) == {255}


def test_float_images_in_0_255_are_read_as_bytes():
    grey = draw_digit(size=(120, 120), scale=0.4)
    img = Image.fromarray(grey.astype(np.float32), "F")
    _same(preprocess(img).steps["original"], grey)


# ------------------------------------------------------------------------------------ arrays


@pytest.mark.parametrize(
    ("values", "dtype", "want"),
    [
        ([0, 1, 128, 255], np.uint8, [0, 1, 128, 255]),
        ([False, True], np.bool_, [0, 255]),
        ([0, 257, 32768, 65535], np.uint16, [0, 1, 128, 255]),
        ([0, 257, 32768, 65535], ">u2", [0, 1, 128, 255]),
        ([0, 3, 255], np.int16, [0, 3, 255]),
        ([0, 3, 255], np.int64, [0, 3, 255]),
        ([0.0, 0.5, 1.0], np.float32, [0, 128, 255]),
        ([-1e-7, 1.0 + 1e-7], np.float64, [0, 255]),
        ([0.0, 1.0 + 1e-6], np.float64, [0, 255]),  # the tolerance itself is still [0, 1]
        ([0.0, 255.0 + 255e-6], np.float64, [0, 255]),  # and still [0, 255]
        ([0.0, 1.5, 2.0], np.float64, [0, 2, 2]),
        ([0.0, 100.4, 255.0002], np.float64, [0, 100, 255]),
    ],
)
def test_each_dtype_is_scaled_to_bytes(values, dtype, want):
    got = pp._to_uint8(np.asarray(values, dtype))
    assert got.dtype == np.uint8 and got.tolist() == want


def test_sixteen_bit_images_of_any_integer_type_use_the_16_bit_range():
    got = pp._to_uint8(np.asarray([0, 257, 65535], np.int32), sixteen_bit=True)
    assert got.tolist() == [0, 1, 255]


@pytest.mark.parametrize(
    ("values", "dtype", "message"),
    [
        ([0.0, 255.01], np.float64, "image values span [0, 255.01]: expected [0, 1] or [0, 255]"),
        ([-1e-5, 1.0], np.float32, "image values span [-1e-05, 1]: expected [0, 1] or [0, 255]"),
        ([-1, 3], np.int16, "image values span [-1, 3]: expected [0, 255] for int16"),
        ([0, 256], np.int32, "image values span [0, 256]: expected [0, 255] for int32"),
        ([0.0, np.nan], np.float32, "the image array contains NaN or infinite values"),
        ([0.0, np.inf], np.float64, "the image array contains NaN or infinite values"),
        ([1j], np.complex64, "unsupported array dtype complex64: expected integers or floats"),
    ],
)
def test_values_out_of_range_are_refused_with_the_range(values, dtype, message):
    with pytest.raises(ImageInputError, match=f"^{re.escape(message)}"):
        pp._to_uint8(np.asarray(values, dtype))


def test_conversion_in_row_blocks_matches_one_pass(monkeypatch):
    rng = np.random.default_rng(0)
    a = rng.random((7, 3, 4))
    want = np.rint(np.clip(a.astype(np.float32) * np.float32(255.0), 0, 255)).astype(np.uint8)
    monkeypatch.setattr(pp, "_CONVERT_ELEMENTS", 20)  # 1 row (12 values) per block
    _same(pp._to_uint8(a), want)
    monkeypatch.setattr(pp, "_CONVERT_ELEMENTS", 30)  # 2 rows per block, the last one short
    _same(pp._to_uint8(a), want)
    monkeypatch.setattr(pp, "_CONVERT_ELEMENTS", 5)  # fewer values than a row: still a row
    _same(pp._to_uint8(a), want)


@pytest.mark.parametrize("shape", [(5,), (4, 4, 5), (4, 4, 0), (2, 4, 4, 1)])
def test_arrays_of_other_shapes_are_refused_by_shape(shape):
    message = f"expected an image array of shape (H, W) or (H, W, 1|2|3|4), got {shape}"
    with pytest.raises(ImageInputError, match=f"^{re.escape(message)}$"):
        preprocess(np.zeros(shape, np.uint8))


def test_array_channel_layouts_read_as_their_pil_images():
    grey = draw_digit(size=(120, 90), scale=0.3)
    want = preprocess(grey).steps["original"]
    _same(preprocess(grey[..., None]).steps["original"], want)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    _same(preprocess(rgb).steps["original"], want)
    opaque = np.full(grey.shape, 255, np.uint8)
    _same(preprocess(np.dstack([grey, opaque])).steps["original"], want)
    _same(preprocess(np.dstack([rgb, opaque])).steps["original"], want)
    # Grey + alpha: strokes on transparency composite like the same RGBA.
    rgba = rgba_on_transparent(grey)
    ga = np.dstack([rgba[..., 0], rgba[..., 3]])
    _same(preprocess(ga).steps["original"], preprocess(rgba).steps["original"])


def test_array_width_and_height_are_checked_the_right_way_round(monkeypatch):
    import flaxdigits.serve.runtime.decode as decode

    monkeypatch.setattr(decode, "MAX_SIDE", 150)
    tall = np.zeros((151, 40), np.uint8)
    with pytest.raises(ImageInputError, match=r"the image is 40x151: a side over"):
        preprocess(tall)


# ------------------------------------------------------------------------- transparency rule


def _light_strokes(opaque_fraction: float, level: int = 255) -> np.ndarray:
    """RGBA: an opaque grey `level` area of about opaque_fraction of the canvas, holding a
    black digit, on transparency whose hidden colour is black."""
    h, w = 120, 120
    out = np.zeros((h, w, 4), np.uint8)
    rows = round(opaque_fraction * h)
    out[:rows, :, :3] = level
    out[:rows, :, 3] = 255
    return out


def test_light_strokes_on_transparency_go_onto_black():
    ink = draw_digit(size=(120, 120), scale=0.4) < 128
    rgba = np.zeros((120, 120, 4), np.uint8)
    rgba[ink] = (230, 230, 230, 255)  # a light brush, far under half the canvas
    got = preprocess(rgba)
    assert got.steps["original"][0, 0] == 0 and got.steps["original"][ink].min() == 230
    _same(got.image, preprocess(np.where(ink, 230, 0).astype(np.uint8)).image)


def test_dark_strokes_on_transparency_go_onto_white():
    ink = draw_digit(size=(120, 120), scale=0.4) < 128
    rgba = np.zeros((120, 120, 4), np.uint8)
    rgba[ink] = (100, 100, 100, 255)
    assert preprocess(rgba).steps["original"][0, 0] == 255


def test_a_mostly_opaque_light_image_goes_onto_white():
    # A white sticker over most of a transparent canvas, a digit drawn on it.
    rgba = np.zeros((120, 120, 4), np.uint8)
    rgba[:, :80] = (255, 255, 255, 255)
    rgba[30:90, 30:34, :3] = 0
    got = preprocess(rgba)
    assert got.steps["original"][0, 119] == 255  # the transparent strip is white, not black


def test_a_fully_transparent_canvas_is_empty_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(EmptyCanvasError):
            preprocess(np.zeros((50, 50, 4), np.uint8))


# ------------------------------------------------------------------------ background and ink


@pytest.mark.parametrize(
    ("shape", "ring"),
    [((20, 100), 1), ((100, 100), 2), ((200, 300), 4), ((75, 75), 2), ((10, 10), 1)],
)
def test_the_background_is_the_median_of_a_ring_2_percent_wide(shape, ring):
    h, w = shape
    grey = np.full(shape, 10, np.uint8)  # inside the ring: never the background
    grey[:ring], grey[-ring:], grey[:, :ring], grey[:, -ring:] = 200, 200, 200, 200
    assert pp._background_level(grey) == 200
    # One pixel less of ring on any side, and that side reads as interior.
    for side in range(4):
        thin = np.full(shape, 10, np.uint8)
        bands = [(slice(0, ring), slice(None)), (slice(h - ring, h), slice(None))]
        bands += [(slice(None), slice(0, ring)), (slice(None), slice(w - ring, w))]
        for i, band in enumerate(bands):
            thin[band] = 200 if i != side else 10
        ring_values = np.concatenate(
            [thin[:ring].ravel(), thin[-ring:].ravel(), thin[:, :ring].ravel()]
            + [thin[:, -ring:].ravel()]
        )
        assert pp._background_level(thin) == int(np.median(ring_values))


@pytest.mark.parametrize(("shape", "ring"), [((150, 150), 3), ((200, 300), 4), ((400, 250), 5)])
def test_a_dark_one_pixel_edge_does_not_decide_the_background(shape, ring):
    # A scan's dark edge: the ring is a third or less of it, the background stays light.
    grey = np.full(shape, 10, np.uint8)
    grey[:ring], grey[-ring:], grey[:, :ring], grey[:, -ring:] = 200, 200, 200, 200
    grey[0], grey[-1], grey[:, 0], grey[:, -1] = 10, 10, 10, 10
    assert pp._background_level(grey) == 200


@pytest.mark.parametrize(
    ("background", "levels", "ink"),
    [
        (255, [0, 51, 153, 204, 255], [255, 191, 64, 0, 0]),  # dark ink on white
        (200, [0, 100, 160, 200], [255, 96, 0, 0]),  # dark ink on grey paper
        (128, [0, 64, 128, 200], [255, 96, 0, 0]),  # a mid-grey border counts as light
        (0, [0, 51, 153, 255], [0, 0, 128, 255]),  # light ink on black
        (50, [0, 50, 101, 255], [0, 0, 16, 255]),  # light ink on dark grey
        (127, [127, 255, 0], [0, 255, 0]),
    ],
)
def test_ink_is_contrast_to_the_background_above_the_noise_level(background, levels, ink):
    grey = np.full((40, 40), background, np.uint8)
    grey[20, 10 : 10 + len(levels)] = levels
    got = np.asarray(pp._ink(Image.fromarray(grey)))
    assert got[20, 10 : 10 + len(levels)].tolist() == ink
    assert got[0, 0] == 0


# ------------------------------------------------------------------------ empty-canvas rules


def _ink_image(size=(50, 50)) -> np.ndarray:
    return np.zeros(size[::-1], np.uint8)


def test_a_peak_under_the_minimum_contrast_is_an_empty_canvas():
    ink = _ink_image()
    ink[10:30, 10:30] = 63  # 0.4 contrast is 63.75 on the ink scale
    with pytest.raises(EmptyCanvasError):
        pp._ink_box(Image.fromarray(ink))
    ink[10:30, 10:30] = 64
    assert pp._ink_box(Image.fromarray(ink)) == (10, 10, 30, 30)


def test_fewer_than_four_pixels_at_half_the_peak_is_an_empty_canvas():
    ink = _ink_image()
    ink[20, 20:23] = 255
    ink[21, 20] = 127  # under half of 255
    with pytest.raises(EmptyCanvasError):
        pp._ink_box(Image.fromarray(ink))
    ink[21, 20] = 128  # half of 255, rounded up: counts
    assert pp._ink_box(Image.fromarray(ink)) == (20, 20, 23, 22)


def test_an_ink_box_under_3_percent_of_the_longer_side_is_an_empty_canvas():
    ink = _ink_image((100, 40))  # under the speckle size; the limit is 3 pixels
    ink[10:12, 10:12] = 255
    with pytest.raises(EmptyCanvasError):
        pp._ink_box(Image.fromarray(ink))
    ink[10:13, 10:13] = 255
    assert pp._ink_box(Image.fromarray(ink)) == (10, 10, 13, 13)
    wide = _ink_image((100, 40))
    wide[30, 5:8] = 255
    wide[31, 5] = 255
    assert pp._ink_box(Image.fromarray(wide)) == (5, 30, 8, 32)  # the longer side counts


# --------------------------------------------------------------------------------- speckles


def _block_and_speckle(side: int) -> np.ndarray:
    ink = np.zeros((side, side), np.uint8)
    ink[20:40, 20:30] = 255
    ink[side - 3, side - 3] = 255  # isolated dots far from the digit, after it
    ink[2, 3] = 255  # and before it
    return ink


def test_images_from_64_pixels_ignore_an_isolated_dot():
    assert pp._ink_box(Image.fromarray(_block_and_speckle(64))) == (20, 20, 30, 40)


def test_images_under_64_pixels_keep_every_dot():
    assert pp._ink_box(Image.fromarray(_block_and_speckle(63))) == (3, 2, 61, 61)


def test_a_dot_one_blank_pixel_from_the_digit_is_still_a_speckle():
    ink = np.zeros((100, 100), np.uint8)
    ink[20:40, 20:30] = 255
    ink[41, 25] = ink[18, 25] = 255  # below and above, past one blank row
    ink[30, 31] = ink[30, 18] = 255  # right and left, past one blank column
    ink[18, 18] = 255  # diagonally before
    assert pp._ink_box(Image.fromarray(ink)) == (20, 20, 30, 40)


def test_a_hairline_is_a_speckle_on_a_large_image():
    ink = np.zeros((100, 100), np.uint8)
    ink[30:60, 30:60] = 255
    ink[80, 5:95] = 255  # a 1-pixel line across the canvas: ignored
    assert pp._ink_box(Image.fromarray(ink)) == (30, 30, 60, 60)


def test_the_speckle_filter_keeps_ink_at_the_canvas_edge():
    ink = np.zeros((80, 80), np.uint8)
    ink[0:30, 0:10] = 255  # touching the top left corner
    ink[50:80, 70:80] = 255  # and the bottom right one
    assert pp._ink_box(Image.fromarray(ink)) == (0, 0, 80, 80)


@pytest.mark.parametrize("width", [2, 3, 6])
def test_the_speckle_filter_gives_stroke_ends_back_but_never_grows_the_box(width):
    ink = np.zeros((100, 100), np.uint8)
    ink[20:70, 40 : 40 + width] = 255  # a vertical stroke
    ink[20 : 20 + width, 40:80] = 255  # and a horizontal one from its top
    assert pp._ink_box(Image.fromarray(ink)) == (40, 20, 80, 70)


# ------------------------------------------------------------------------ stretch and layout


def test_faint_ink_is_stretched_to_full_white():
    crop = Image.fromarray(np.array([[0, 20, 50, 100]], np.uint8))
    assert np.asarray(pp._stretch(crop)).tolist() == [[0, 51, 128, 255]]
    full = Image.fromarray(np.array([[0, 20, 255]], np.uint8))
    assert pp._stretch(full) is full


@pytest.mark.parametrize(
    ("w", "h"), [(40, 10), (10, 40), (33, 33), (200, 90), (3, 1), (1, 40), (40, 1)]
)
def test_the_ink_box_fits_20_pixels_and_its_mass_sits_at_14_14(w, h):
    crop = Image.new("L", (w, h), 255)
    square, out = pp._to_mnist(crop)
    assert square is crop and out.shape == (28, 28) and out.dtype == np.uint8
    rows, cols = np.nonzero(out)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 == 20
    scale = 20 / max(w, h)
    assert (np.ptp(rows) + 1, np.ptp(cols) + 1) == (
        max(1, round(h * scale)),
        max(1, round(w * scale)),
    )
    mass = out.astype(np.float64)
    cy = (mass.sum(axis=1) @ np.arange(28)) / mass.sum()
    cx = (mass.sum(axis=0) @ np.arange(28)) / mass.sum()
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_a_lopsided_digit_is_shifted_no_further_than_the_frame():
    crop = np.zeros((40, 40), np.uint8)
    crop[:4, :] = 255  # a heavy top bar
    crop[:, :2] = 60  # a faint left stem: the box is 40x40, its mass far up and left
    _, out = pp._to_mnist(Image.fromarray(crop))
    small = np.asarray(pp._resize(Image.fromarray(crop), (20, 20)))
    assert out.sum() == small.sum()  # no ink cut off
    rows, cols = np.nonzero(out)
    assert (rows.min(), rows.max()) == (8, 27)  # shifted down only as far as the frame allows


def test_a_bottom_heavy_digit_is_shifted_no_further_than_the_frame():
    crop = np.zeros((40, 40), np.uint8)
    crop[-4:, :] = 255  # a heavy bottom bar
    crop[:, -2:] = 60
    _, out = pp._to_mnist(Image.fromarray(crop))
    small = np.asarray(pp._resize(Image.fromarray(crop), (20, 20)))
    assert out.sum() == small.sum()
    rows, cols = np.nonzero(out)
    assert (rows.min(), rows.max()) == (0, 19)


def test_a_crop_that_vanishes_in_the_resize_gives_a_blank_image():
    crop = Image.new("L", (30, 11), 0)
    _, out = pp._to_mnist(crop)
    assert out.shape == (28, 28) and not out.any()


def test_the_box_square_pads_20_percent_on_every_side_and_centres_the_box():
    crop = Image.new("L", (50, 30), 255)
    square, out = pp._to_box(crop)
    assert square.size == (70, 70)  # 50 + 2 * 10
    assert square.getbbox() == (10, 20, 60, 50)
    assert out.shape == (28, 28)
    rows, cols = np.nonzero(out > 127)
    assert (cols.min(), 27 - cols.max()) == (4, 4) and rows.min() == 27 - rows.max()
    odd = Image.new("L", (7, 4), 255)
    square, _ = pp._to_box(odd)
    assert square.size == (9, 9) and square.getbbox() == (1, 2, 8, 6)  # 7 + 2 * round(1.4)


def test_steps_are_read_only_bytes_in_display_order():
    grey = draw_digit(size=(120, 120), scale=0.4)
    for method in ("mnist", "box"):
        got = preprocess(grey, method=method)
        assert list(got.steps) == ["original", "grayscale", "cropped", "28x28"]
        assert got.method == method
        for step in got.steps.values():
            assert step.dtype == np.uint8 and step.ndim == 2 and not step.flags.writeable
        _same(got.steps["28x28"], np.rint(got.image * 255))
        assert got.image.dtype == np.float32
