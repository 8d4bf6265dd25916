"""Distortions: identity, geometry against independent computations, stroke thickness, nothing
cropped at the grid's extremes, the served re-centring of a canvas."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flaxdigits.evaluation import distort
from flaxdigits.evaluation.distort import (
    CANVAS_SIDE,
    DISTORTIONS,
    SUPERSAMPLE,
    grey_morphology,
    on_canvas,
    recentre,
    rotate,
    scale,
    slant,
    thickness,
    translate,
)
from flaxdigits.evaluation.robustness import GRID
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError

YS, XS = np.mgrid[:CANVAS_SIDE, :CANVAS_SIDE]


def bar(rows: slice, cols: slice) -> np.ndarray:
    """A white rectangle on a black (28, 28) digit."""
    digit = np.zeros((28, 28), np.uint8)
    digit[rows, cols] = 255
    return digit


def moments(canvas: np.ndarray) -> tuple[float, float, float, float, float]:
    """Mass, centre of mass (x, y) and second central moments cxx, cxy of an image."""
    mass = canvas.astype(np.float64)
    w = mass / mass.sum()
    cx, cy = (w * XS).sum(), (w * YS).sum()
    return mass.sum(), cx, cy, (w * (XS - cx) ** 2).sum(), (w * (XS - cx) * (YS - cy)).sum()


def orientation_deg(canvas: np.ndarray) -> float:
    """Angle of the principal axis of the ink, counter-clockwise from +x with y pointing up."""
    w = canvas.astype(np.float64) / canvas.sum()
    cx, cy = (w * XS).sum(), (w * YS).sum()
    cxx, cyy = (w * (XS - cx) ** 2).sum(), (w * (YS - cy) ** 2).sum()
    cxy = (w * (XS - cx) * (YS - cy)).sum()
    return float(np.degrees(0.5 * np.arctan2(-2 * cxy, cxx - cyy)))


def far_reaching(images: np.ndarray, k: int) -> np.ndarray:
    """The k digits whose ink reaches furthest from the centre of their box."""
    ys, xs = np.mgrid[:28, :28]
    radius = np.hypot(ys - 13.5, xs - 13.5)
    reach = np.where(images > 0, radius, 0).reshape(len(images), -1).max(axis=1)
    return images[np.argsort(reach)[-k:]]


def textbook_distort(digit, *, rotation=0.0, shear=0.0, scale=1.0, shift=(0, 0), thickness=0.0):
    """distort() the plain way: every step over the whole canvas."""
    big_side = CANVAS_SIDE * SUPERSAMPLE
    big = Image.fromarray(on_canvas(digit)).resize((big_side, big_side), Image.Resampling.BICUBIC)
    a = np.radians(rotation)
    rotate_ = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    inverse = np.linalg.inv(scale * rotate_ @ np.array([[1.0, shear], [0.0, 1.0]]))
    centre = np.full(2, big_side / 2)
    offset = centre - inverse @ (centre + SUPERSAMPLE * np.asarray(shift, np.float64))
    data = (*inverse[0], offset[0], *inverse[1], offset[1])
    big = big.transform(big.size, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    big = np.asarray(big)
    if thickness:
        op = np.maximum if thickness > 0 else np.minimum
        big = grey_morphology(big, abs(thickness) * SUPERSAMPLE, op)
    return np.asarray(Image.fromarray(big).reduce(SUPERSAMPLE))


def test_the_digit_sits_in_the_middle_of_the_canvas(mnist):
    digit = mnist.test_images[0]
    canvas = on_canvas(digit)
    assert canvas.shape == (CANVAS_SIDE, CANVAS_SIDE) and canvas.dtype == np.uint8
    np.testing.assert_array_equal(canvas[14:42, 14:42], digit)
    assert canvas.sum(dtype=np.int64) == digit.sum(dtype=np.int64)


@pytest.mark.parametrize(
    "params",
    [
        {"rotation": 45.0},
        {"rotation": -30.0, "thickness": 1.0},
        {"shear": 0.4},
        {"scale": 1.4, "rotation": 15.0},
        {"scale": 0.6},
        {"shift": (8, -8)},
        {"thickness": -1.0},
        {"thickness": 2.5},
        {},
    ],
    ids=str,
)
def test_working_on_the_ink_box_alone_matches_the_whole_canvas_computation(mnist, params):
    # Pillow's sampling positions differ in the last bits between the two: at most one level.
    for digit in mnist.test_images[:40]:
        got = distort.distort(digit, **params).astype(np.int16)
        assert np.abs(got - textbook_distort(digit, **params)).max() <= 1


def test_identity_levels_are_one_image_close_to_the_digit_on_the_canvas(mnist):
    # Every level takes the supersampled path: what it leaves at the identity is its blur
    # (measured 0.0033 of full scale on average).
    for digit in mnist.test_images[:50]:
        identity = distort.distort(digit)
        for name, levels in GRID.items():
            level = 1.0 if name == "scale" else 0.0
            assert level in levels, name
            np.testing.assert_array_equal(DISTORTIONS[name](digit, level), identity)
        assert np.abs(identity - on_canvas(digit).astype(np.float64)).mean() / 255 < 0.008


def test_the_served_recentring_of_an_undistorted_canvas_gives_the_mnist_digit_back(mnist):
    # preprocess reads the black border as background and white ink on it: the MNIST digit
    # comes back up to its own re-fit (noise floor cut, box refitted to 20 px, whole-pixel
    # centring). Measured: mean abs diff 0.0148 of full scale over 1000 digits, worst 0.111.
    digits = mnist.test_images[:1000]
    diffs = np.array(
        [np.abs(recentre(on_canvas(d)).astype(np.float64) - d).mean() / 255 for d in digits]
    )
    assert diffs.mean() < 0.02 and diffs.max() < 0.15
    assert recentre(on_canvas(digits[0])).dtype == np.uint8


def test_whole_pixel_translations_are_undone_by_the_served_recentring(mnist):
    for digit in mnist.test_images[:20]:
        expected = recentre(distort.distort(digit))
        for t in (-8.0, -4.0, 4.0, 8.0):
            np.testing.assert_array_equal(recentre(translate(digit, t, t)), expected)


def test_a_quarter_turn_matches_numpy_rot90(mnist):
    # np.rot90 turns counter-clockwise as displayed, exactly, about the even canvas's centre.
    for digit in mnist.test_images[:50]:
        expected = np.rot90(on_canvas(digit)).astype(np.float64)
        assert np.abs(rotate(digit, 90) - expected).mean() / 255 < 0.008


@pytest.mark.parametrize("angle", [-45.0, -30.0, 15.0, 30.0, 45.0, 60.0])
def test_rotation_turns_a_bar_counter_clockwise_about_the_canvas_centre(angle):
    horizontal = bar(slice(13, 15), slice(4, 24))
    turned = rotate(horizontal, angle)
    mass, cx, cy, _, _ = moments(turned)
    assert orientation_deg(turned) == pytest.approx(angle, abs=0.5)
    assert (cx, cy) == (pytest.approx(27.5, abs=0.05), pytest.approx(27.5, abs=0.05))
    assert mass == pytest.approx(horizontal.sum(dtype=np.int64), rel=0.01)  # det = 1


@pytest.mark.parametrize("shear", [-0.4, -0.15, 0.3])
def test_slant_shifts_each_row_by_shear_times_its_offset_from_the_centre(shear):
    vertical = bar(slice(4, 24), slice(13, 15))
    slanted = slant(vertical, shear).astype(np.float64)
    w = slanted / slanted.sum()
    cx, cy = (w * XS).sum(), (w * YS).sum()
    slope = (w * (XS - cx) * (YS - cy)).sum() / (w * (YS - cy) ** 2).sum()  # dx / dy of the bar
    assert slope == pytest.approx(shear, abs=0.01)
    assert slanted.sum() == pytest.approx(vertical.sum(dtype=np.int64), rel=0.01)


@pytest.mark.parametrize("factor", [0.6, 0.8, 1.2, 1.4])
def test_scale_multiplies_the_ink_spread_by_the_factor_and_its_mass_by_its_square(mnist, factor):
    for digit in mnist.test_images[:10]:
        mass, cx, cy, cxx, _ = moments(scale(digit, factor))
        mass0, cx0, cy0, cxx0, _ = moments(on_canvas(digit))
        assert mass == pytest.approx(factor**2 * mass0, rel=0.03)
        # the spread (variance) by factor^2, plus the resampling's blur (measured 0.1-0.55 px^2)
        assert 0 < cxx - factor**2 * cxx0 < 0.7
        # about the canvas centre: the centre of mass moves away from it by the factor
        assert cx - 27.5 == pytest.approx(factor * (cx0 - 27.5), abs=0.1)
        assert cy - 27.5 == pytest.approx(factor * (cy0 - 27.5), abs=0.1)


def test_translation_moves_the_centre_of_mass_and_keeps_the_ink(mnist):
    digit = mnist.test_images[3]
    mass0, cx0, cy0, _, _ = moments(on_canvas(digit))
    for dx, dy in [(8, 8), (-8, 4), (2.5, -6)]:
        mass, cx, cy, _, _ = moments(translate(digit, dx, dy))
        assert (cx - cx0, cy - cy0) == (pytest.approx(dx, abs=0.05), pytest.approx(dy, abs=0.05))
        assert mass == pytest.approx(mass0, rel=0.01)


def test_thickness_moves_each_stroke_edge_by_delta_pixels():
    # A 4-px horizontal stroke: the ink across its middle is 4 + 2 * delta pixels' worth.
    stroke = bar(slice(12, 16), slice(4, 24))
    for delta in [-1.0, -0.5, 0.25, 0.5, 1.0, 2.5]:
        column = thickness(stroke, delta)[:, CANVAS_SIDE // 2].astype(np.float64) / 255
        assert column.sum() == pytest.approx(4 + 2 * delta, abs=0.05), delta


def test_ink_mass_grows_with_thickness_over_the_grid(mnist):
    levels = sorted(GRID["thickness"])
    for digit in mnist.test_images[:30]:
        masses = [thickness(digit, t).sum(dtype=np.int64) for t in levels]
        assert all(a < b for a, b in zip(masses, masses[1:], strict=False)), masses


@pytest.mark.parametrize("radius", [1.0, 1.5, 2.0, 3.7, 6.0])
@pytest.mark.parametrize("op", [np.maximum, np.minimum], ids=["dilation", "erosion"])
def test_grey_morphology_matches_the_textbook_disk_filter(radius, op):
    rng = np.random.default_rng(int(radius * 10))
    a = np.zeros((40, 44), np.uint8)
    a[8:30, 10:36] = rng.integers(0, 256, size=(22, 26))
    a[12:16, 5:9] = 255  # ink near the image's edge too
    r = int(radius)
    padded = np.pad(a, r)  # outside the image is background
    expected = None
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dx * dx + dy * dy <= radius * radius:
                part = padded[r + dy : r + dy + a.shape[0], r + dx : r + dx + a.shape[1]]
                expected = part if expected is None else op(expected, part)
    np.testing.assert_array_equal(grey_morphology(a, radius, op), expected)


def test_nothing_leaves_the_canvas_at_the_grids_extremes(mnist):
    digits = np.concatenate([mnist.test_images[:20], far_reaching(mnist.test_images, 20)])
    ring = np.ones((CANVAS_SIDE, CANVAS_SIDE), bool)
    ring[2:-2, 2:-2] = False  # a 2-pixel border must stay black
    for name, levels in GRID.items():
        for level in (min(levels), max(levels)):
            for digit in digits:
                canvas = DISTORTIONS[name](digit, level)
                assert canvas.shape == (CANVAS_SIDE, CANVAS_SIDE) and canvas.dtype == np.uint8
                assert canvas[ring].max() == 0, (name, level)
                assert canvas.max() > 0, (name, level)


def test_a_digit_thinned_away_is_an_empty_canvas(mnist):
    hairline = bar(slice(14, 15), slice(4, 24)) // 2  # 1 px, half intensity
    with pytest.raises(EmptyCanvasError):
        recentre(thickness(hairline, -1.0))
    recentre(thickness(hairline, 0.5))  # thickened it is a stroke


def test_bad_digits_and_parameters_are_refused():
    for bad in [np.zeros((28, 27), np.uint8), np.zeros((28, 28), np.float32)]:
        with pytest.raises(ValueError, match=r"\(28, 28\) uint8"):
            on_canvas(bad)
    with pytest.raises(ValueError, match="scale must be positive"):
        distort.distort(np.zeros((28, 28), np.uint8), scale=0.0)
