"""Deformed digits, the one implementation the robustness report and its tests share.

A (28, 28) uint8 MNIST digit (white on black) is placed in the middle of a CANVAS_SIDE canvas
(black), so that no distortion in the report's grid pushes ink off it, and deformed there:

- geometry (rotation, slant, scale, translation): one affine map about the canvas centre,
  sampled bilinearly by Pillow on the canvas supersampled SUPERSAMPLE times (bicubic upsampling,
  box-filter reduction back: the reduction anti-aliases a shrinking map);
- stroke thickness, after the geometry: grey dilation (thicker) or erosion (thinner) of the
  supersampled canvas by a disk of radius |delta| * SUPERSAMPLE supersampled pixels, i.e. each
  stroke edge moves by |delta| digit pixels and a stroke's width changes by about 2 * delta.

Every level, the identity included, takes this path, so that levels differ by the distortion
alone. Each step is computed over the ink's bounding box only (the rest of the canvas is black
and stays so): the same pixels as the whole canvas, at a fraction of the cost. `recentre` then
makes the model input the way the page does, with the served preprocessing (`mnist`: ink fitted
into 20x20, centre of mass at 14, 14). numpy and Pillow only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image

from flaxdigits.core import contract
from flaxdigits.serve.runtime.preprocess import preprocess

CANVAS_SIDE = 56  # pixels; the digit's 28x28 box sits at [14, 42) on both axes
SUPERSAMPLE = 4  # resolution factor of the geometry and thickness steps
_SIDE = contract.IMAGE_SIDE


def on_canvas(digit: np.ndarray) -> np.ndarray:
    """The digit in the middle of a black (CANVAS_SIDE, CANVAS_SIDE) uint8 canvas."""
    digit = np.asarray(digit)
    if digit.shape != (_SIDE, _SIDE) or digit.dtype != np.uint8:
        raise ValueError(f"expected a (28, 28) uint8 digit, got {digit.shape} {digit.dtype}")
    canvas = np.zeros((CANVAS_SIDE, CANVAS_SIDE), np.uint8)
    start = (CANVAS_SIDE - _SIDE) // 2
    canvas[start : start + _SIDE, start : start + _SIDE] = digit
    return canvas


def distort(
    digit: np.ndarray,
    *,
    rotation: float = 0.0,
    shear: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    thickness: float = 0.0,
) -> np.ndarray:
    """The digit deformed on the canvas: (CANVAS_SIDE, CANVAS_SIDE) uint8, white on black.

    The affine map, about the canvas centre, is x' = scale * R(rotation) @ S(shear) @ x + shift
    in (column, row) coordinates: S shears columns by shear * (row - centre), R turns the digit
    counter-clockwise as seen for a positive angle (degrees), shift moves it right and down
    (canvas pixels). Then strokes are thickened (thickness > 0) or thinned (< 0) by |thickness|
    digit pixels per edge.
    """
    canvas = on_canvas(digit)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    forward = scale * np.array([[cos, sin], [-sin, cos]]) @ np.array([[1.0, shear], [0.0, 1.0]])
    big = _upsample(canvas)
    if not np.array_equal(forward, np.eye(2)) or any(shift):
        big = _affine(big, forward, SUPERSAMPLE * np.asarray(shift, np.float64))
    if thickness:
        op = np.maximum if thickness > 0 else np.minimum
        big = grey_morphology(big, abs(thickness) * SUPERSAMPLE, op)
    return np.asarray(Image.fromarray(big).reduce(SUPERSAMPLE))


def _ink_box(a: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the nonzero pixels grown by margin, within the image."""
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    if rows.size == 0:
        return None
    h, w = a.shape
    return (
        max(int(rows[0]) - margin, 0),
        min(int(rows[-1]) + 1 + margin, h),
        max(int(cols[0]) - margin, 0),
        min(int(cols[-1]) + 1 + margin, w),
    )


def _upsample(canvas: np.ndarray) -> np.ndarray:
    """The canvas resized SUPERSAMPLE times, bicubic; computed over the ink's box alone (with
    black around it that the kernel, 2 pixels each way, reads), the rest is black."""
    side = canvas.shape[0] * SUPERSAMPLE
    out = np.zeros((side, side), np.uint8)
    box = _ink_box(canvas, 3)
    if box is None:
        return out
    top, bottom, left, right = box
    size = ((right - left) * SUPERSAMPLE, (bottom - top) * SUPERSAMPLE)
    crop = Image.fromarray(canvas[top:bottom, left:right]).resize(size, Image.Resampling.BICUBIC)
    s = SUPERSAMPLE
    out[top * s : bottom * s, left * s : right * s] = crop
    return out


def _affine(a: np.ndarray, forward: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """a under x' = forward @ (x - centre) + centre + shift, sampled bilinearly; computed over
    the image of the ink's box alone.

    Pillow samples the input at inverse @ p + offset for each output pixel centre p (pixel i
    spans [i, i + 1)), so p_in = inverse @ (p - centre - shift) + centre.
    """
    out = np.zeros_like(a)
    box = _ink_box(a, 1)  # + the pixel bilinear sampling reaches
    if box is None:
        return out
    top, bottom, left, right = box
    h, w = a.shape
    centre = np.array([w, h], np.float64) / 2  # (x, y)
    corners = np.array([[left, top], [right, top], [left, bottom], [right, bottom]], np.float64)
    mapped = (corners - centre) @ forward.T + centre + shift
    x0, y0 = np.maximum(np.floor(mapped.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(mapped.max(axis=0)).astype(int) + 1, [w, h])
    if x0 >= x1 or y0 >= y1:  # moved off the image
        return out
    inverse = np.linalg.inv(forward)  # det = scale^2 > 0
    offset = centre - inverse @ (centre + shift) + inverse @ np.array([x0, y0], np.float64)
    data = (*inverse[0], offset[0], *inverse[1], offset[1])
    image = Image.fromarray(a)
    out[y0:y1, x0:x1] = image.transform(
        (int(x1 - x0), int(y1 - y0)), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR
    )
    return out


def rotate(digit: np.ndarray, angle_deg: float) -> np.ndarray:
    """Turned by angle_deg degrees, counter-clockwise as seen for a positive angle."""
    return distort(digit, rotation=angle_deg)


def slant(digit: np.ndarray, shear: float) -> np.ndarray:
    """Sheared: x += shear * (y - centre), y downwards (positive: the top leans left)."""
    return distort(digit, shear=shear)


def scale(digit: np.ndarray, factor: float) -> np.ndarray:
    """Enlarged (factor > 1) or shrunk about the canvas centre."""
    return distort(digit, scale=factor)


def translate(digit: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Moved dx pixels right and dy down on the canvas."""
    return distort(digit, shift=(dx, dy))


def thickness(digit: np.ndarray, delta_px: float) -> np.ndarray:
    """Strokes thickened (delta_px > 0) or thinned (< 0) by |delta_px| pixels per edge."""
    return distort(digit, thickness=delta_px)


# The report's distortions by name: (digit, level) -> canvas. Translation moves along the
# diagonal, (level, level).
DISTORTIONS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "rotation": rotate,
    "slant": slant,
    "thickness": thickness,
    "scale": scale,
    "translation": lambda digit, level: translate(digit, level, level),
}


def recentre(canvas: np.ndarray) -> np.ndarray:
    """The served `mnist` preprocessing of a canvas: the (28, 28) uint8 model input (x 255).

    Raises:
        EmptyCanvasError: no ink is left to recognise (a digit thinned away).
    """
    return preprocess(canvas, "mnist").steps["28x28"]


def grey_morphology(
    a: np.ndarray, radius: float, op: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
    """Grey dilation (op=np.maximum) or erosion (np.minimum) of a 2-D image by the disk
    {(dx, dy): dx^2 + dy^2 <= radius^2}; outside the image is background (0)."""
    r = math.floor(radius)
    box = _ink_box(a, r)  # only the ink's box grown by r can change: work on it alone
    if r == 0 or box is None:
        return a.copy()
    top, bottom, left, right = box
    window = np.pad(a[top:bottom, left:right], r)  # (h + 2r, w + 2r)
    h, w = bottom - top, right - left
    # spans[k][y, x]: op over window[y, x - k .. x + k], exact for the columns used below.
    spans = [window]
    for k in range(1, r + 1):
        span = spans[-1].copy()
        inner = span[:, k:-k]
        inner[...] = op(op(inner, window[:, 2 * k :]), window[:, : -2 * k])
        spans.append(span)
    out = None
    for dy in range(-r, r + 1):
        half = math.floor(math.sqrt(max(radius * radius - dy * dy, 0.0)))
        part = spans[half][r + dy : r + dy + h, r : r + w]
        out = part.copy() if out is None else op(out, part)
    result = a.copy()
    result[top:bottom, left:right] = out
    return result
