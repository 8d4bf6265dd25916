"""What a person drew or uploaded -> the 28x28 white-on-black input the models expect.

The one place preprocessing lives: the drawing page, the predict CLI and the canvas-accuracy report
all call `preprocess`. numpy and Pillow only; decoding files and bytes is serve/runtime/decode.py's.

Pipeline: any input -> 8-bit grey ("original", alpha composited onto a plain background) -> ink
map ("grayscale": white digit on black, background level and polarity detected, faint noise
removed) -> ink bounding box ("cropped") -> 28x28 by one of the two contract.PREPROCESS_METHODS:

- ``mnist`` (default), the recipe MNIST itself was made with: fit the ink box into 20x20 keeping
  its aspect ratio (anti-aliased), then place it in 28x28 so its centre of mass sits where MNIST
  digits have theirs (pixel index 14, 14).
- ``box``, the original study's: pad the ink box to a square with 20% of its longer side on every
  side, centre the box in it, resize to 28x28. (Called ``seed`` before 0.2; that name still works.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from flaxdigits.core import contract
from flaxdigits.serve.runtime.decode import (
    ImageInputError,
    check_size,
    decode_bytes,
    load_image_file,
)

_CONVERT_ELEMENTS = 1 << 20  # array values scaled to uint8 per step: bounds the float32 temporaries

# Ink is measured as the fraction of full contrast between the background and the darkest
# (or, on a dark canvas, lightest) possible value. Below NOISE_LEVEL it is background: JPEG
# ringing, paper texture, sensor noise, a faint anti-aliasing haze.
NOISE_LEVEL = 0.2
# Empty canvas: the strongest ink is under MIN_PEAK contrast (a smudge, scanner noise), fewer than
# MIN_INK_PIXELS pixels reach half the strongest ink, or the ink box's longer side is under
# MIN_EXTENT of the canvas's longer side (a stray click, not a digit).
MIN_PEAK = 0.4
MIN_INK_PIXELS = 4
MIN_EXTENT = 0.03
# Images at least this large have speckles ignored when the ink box is measured: a pixel counts
# only if its 3x3 neighbourhood holds more than 4.5 pixels' worth of ink (isolated dots and
# 1-pixel hairlines do not). Smaller images may be drawn with 1-pixel strokes, so they are exempt.
SPECKLE_MIN_SIDE = 64
_SPECKLE_LUT = [255 if v >= 128 else 0 for v in range(256)]

MNIST_BOX = 20  # the longer side of the ink box inside 28x28
MNIST_CENTRE = 14.0  # mean centre of mass of the MNIST test digits, in pixel indices
BOX_PADDING = 0.2  # of the longer side of the ink box, on every side

EMPTY_MESSAGE = "Draw a digit first: the canvas is empty."


class EmptyCanvasError(ImageInputError):
    """The image holds no ink to recognise."""

    def __init__(self, message: str = EMPTY_MESSAGE) -> None:
        super().__init__(message)


@dataclass(frozen=True)
class Preprocessed:
    """The model input plus the intermediate images, for display."""

    image: np.ndarray  # (28, 28) float32 in [0, 1], white digit on black
    # "original" (grey, as given), "grayscale" (ink map), "cropped" (ink box; for box the padded
    # square), "28x28" (= image * 255): read-only uint8 (H, W) arrays, in display order.
    steps: dict[str, np.ndarray]
    method: str


def preprocess(value, method: str = contract.DEFAULT_PREPROCESS_METHOD) -> Preprocessed:
    """Turn an image, array, file path or Gradio editor value into a 28x28 MNIST-style input.

    Args:
        value: a PIL image; a numpy array (H, W), (H, W, 1|2|3|4) of uint8, uint16, bool or float
            (floats in [0, 1] or [0, 255]); a file path; encoded file bytes; or a Gradio
            Sketchpad/ImageEditor value {"background", "layers", "composite"}, any of them None.
            None is an empty canvas.
        method: "mnist" or "box" (see the module docstring; "seed" is box's old name).

    Returns:
        A Preprocessed whose image is (28, 28) float32 in [0, 1], white digit on black.

    Raises:
        EmptyCanvasError: nothing is drawn (blank, transparent, only faint noise or a dot).
        ImageInputError: the input is not a readable image (bad type, shape, values or file).
        ValueError: method is not one of contract.PREPROCESS_METHODS.
    """
    method = contract.check_method(method)
    grey = _grey(_to_image(value))
    ink = _ink(grey)
    box = _ink_box(ink)
    crop = _stretch(ink.crop(box))
    square, final = _to_mnist(crop) if method == "mnist" else _to_box(crop)
    final.flags.writeable = False  # every step is read-only, as documented
    steps = {
        "original": np.asarray(grey),
        "grayscale": np.asarray(ink),
        "cropped": np.asarray(square),
        "28x28": final,
    }
    return Preprocessed(image=contract.scale_pixels(final), steps=steps, method=method)


# ------------------------------------------------------------------------------------- inputs


def _to_image(value) -> Image.Image:
    """Any accepted input -> a PIL image in mode "L" or "RGBA" (8 bits per channel)."""
    if value is None:
        raise EmptyCanvasError()
    if isinstance(value, Mapping):
        return _from_editor(value)
    if isinstance(value, str | os.PathLike):
        return _from_pil(load_image_file(value))
    if isinstance(value, bytes | bytearray):  # an encoded file already in memory
        return _from_pil(decode_bytes(value))
    if isinstance(value, Image.Image):
        return _from_pil(value)
    if isinstance(value, np.ndarray):
        return _from_array(value)
    raise ImageInputError(
        f"unsupported input {type(value).__name__}: expected an image, an array or a file path"
    )


def _from_editor(value: Mapping) -> Image.Image:
    """A Gradio ImageEditor/Sketchpad value: the composite, else background + layers ourselves."""
    if not {"background", "layers", "composite"} & set(value):
        raise ImageInputError(
            "unsupported dict: expected a Gradio editor value with background, layers, composite"
        )
    layers = value.get("layers")
    if layers is None:
        layers = []
    if not isinstance(layers, list | tuple):
        raise ImageInputError(
            f"editor layers must be a list of images, got {type(layers).__name__}"
        )
    parts = [value.get("composite"), value.get("background"), *layers]
    if any(isinstance(p, Mapping) for p in parts):  # would recurse, without end if cyclic
        raise ImageInputError("an editor value cannot hold another editor value")
    if parts[0] is not None:
        return _to_image(parts[0])
    canvas = None
    for part in parts[1:]:  # one layer decoded at a time: memory stays at two canvases
        if part is None:
            continue
        layer = _to_image(part).convert("RGBA")
        if canvas is None:
            canvas = layer
            continue
        if layer.size != canvas.size:  # a layer is anchored at the top left of the background
            padded = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
            padded.paste(layer, (0, 0))
            layer = padded
        canvas = Image.alpha_composite(canvas, layer)
    if canvas is None:
        raise EmptyCanvasError()
    return canvas


def _from_pil(img: Image.Image) -> Image.Image:
    """Normalise a PIL image of any mode to "L" or "RGBA"."""
    check_size(img.width, img.height)
    mode = img.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit integer or float: scale, don't clip
        return _from_array(np.asarray(img), sixteen_bit=mode.startswith("I"))
    try:
        if mode == "La":  # premultiplied; Pillow converts it only to LA
            img = img.convert("LA")
        if "A" in img.mode or "a" in img.mode or "transparency" in img.info:
            return img.convert("RGBA")
        if mode == "L":
            return img
        if mode in ("1", "RGB"):
            return img.convert("L")
        return img.convert("RGB").convert("L")  # P, CMYK, YCbCr, LAB, HSV, ...: by way of RGB
    except (ValueError, OSError) as e:
        raise ImageInputError(f"cannot convert a {mode} image to greyscale: {e}") from None


def _from_array(a: np.ndarray, *, sixteen_bit: bool = False) -> Image.Image:
    """A numpy image -> "L"/"RGBA"; integers by their range, floats in [0, 1] or [0, 255]."""
    if a.ndim == 3 and a.shape[2] in (1, 2, 3, 4):
        channels = a.shape[2]
    elif a.ndim == 2:
        channels = 1
    else:
        raise ImageInputError(
            f"expected an image array of shape (H, W) or (H, W, 1|2|3|4), got {a.shape}"
        )
    check_size(a.shape[1], a.shape[0])
    a = _to_uint8(a, sixteen_bit=sixteen_bit)
    if channels == 1:
        return Image.fromarray(a.reshape(a.shape[:2]))
    if channels == 2:  # grey + alpha
        grey = np.repeat(a[..., :1], 3, axis=2)
        a = np.concatenate([grey, a[..., 1:]], axis=2)
    img = Image.fromarray(np.ascontiguousarray(a))
    return img.convert("L") if channels == 3 else img


def _to_uint8(a: np.ndarray, *, sixteen_bit: bool = False) -> np.ndarray:
    """Scale any supported dtype to uint8; NaN, inf or out-of-range values raise."""
    kind = a.dtype.kind
    if a.dtype == np.uint8:
        return a
    if kind == "b":
        return a.astype(np.uint8) * np.uint8(255)
    if kind not in "uif":
        raise ImageInputError(f"unsupported array dtype {a.dtype}: expected integers or floats")
    if kind == "f" and not np.isfinite(a).all():
        raise ImageInputError("the image array contains NaN or infinite values")
    lo, hi = float(a.min()), float(a.max())
    if (kind == "u" and a.dtype.itemsize == 2) or sixteen_bit:  # uint16 of either byte order
        top = 65535.0
    elif kind == "f" and lo >= -1e-6 and hi <= 1.0 + 1e-6:
        top = 1.0
    else:
        top = 255.0
    if lo < -1e-6 or hi > top + 1e-6 * top:
        expected = "[0, 1] or [0, 255]" if kind == "f" else f"[0, {top:g}]"
        raise ImageInputError(
            f"image values span [{lo:g}, {hi:g}]: expected {expected} for {a.dtype}"
        )
    out = np.empty(a.shape, np.uint8)
    factor = np.float32(255.0 / top)
    step = max(1, _CONVERT_ELEMENTS // max(1, a[0].size))  # rows per step
    for start in range(0, a.shape[0], step):  # a 4096x4096x4 float64 needs no 256 MB copies
        block = a[start : start + step].astype(np.float32) * factor
        np.clip(block, 0, 255, out=block)
        out[start : start + step] = np.rint(block, out=block)
    return out


# ------------------------------------------------------------------------------------ pipeline


def _grey(img: Image.Image) -> Image.Image:
    """ "L" stays; "RGBA" is composited onto white, or onto black for light ink on transparency."""
    if img.mode == "L":
        return img
    alpha = np.asarray(img.getchannel("A"))
    if alpha.min() == 255:
        return img.convert("L")
    opaque = alpha >= 128
    background = "white"
    # A transparent canvas with light strokes (a white brush in a dark theme): white would hide
    # the ink, so that one case goes onto black. Light-on-dark is then detected like any other.
    if 0 < opaque.sum() < opaque.size / 2:
        lum = np.asarray(img.convert("RGB").convert("L"))
        if np.median(lum[opaque]) > 127:
            background = "black"
    plain = Image.new("RGBA", img.size, background)
    return Image.alpha_composite(plain, img).convert("L")


def _background_level(grey: np.ndarray) -> int:
    """The background's grey level: the median of a ring along the image border."""
    h, w = grey.shape
    k = max(1, round(0.02 * min(h, w)))
    ring = np.concatenate(
        [grey[:k].ravel(), grey[-k:].ravel(), grey[:, :k].ravel(), grey[:, -k:].ravel()]
    )
    return int(np.median(ring))


def _ink(grey: Image.Image) -> Image.Image:
    """Grey image -> ink map, white on black: polarity from the border, faint noise removed."""
    bg = _background_level(np.asarray(grey))
    levels = np.arange(256, dtype=np.float32)
    if bg >= 128:  # dark ink on a light background
        contrast = (bg - levels) / max(bg, 1)
    else:  # light ink on a dark background
        contrast = (levels - bg) / max(255 - bg, 1)
    ink = np.clip((contrast - NOISE_LEVEL) / (1.0 - NOISE_LEVEL), 0.0, 1.0)
    lut = np.rint(ink * 255).astype(np.uint8)
    return grey.point(lut.tolist())


def _ink_box(ink: Image.Image) -> tuple[int, int, int, int]:
    """The ink bounding box (left, top, right, bottom), ignoring speckles; empty -> raise."""
    hist = ink.histogram()
    peak = max((v for v in range(256) if hist[v]), default=0)
    if peak < 255 * (MIN_PEAK - NOISE_LEVEL) / (1 - NOISE_LEVEL):
        raise EmptyCanvasError()
    if sum(hist[(peak + 1) // 2 :]) < MIN_INK_PIXELS:
        raise EmptyCanvasError()
    box = ink.getbbox()
    if box is not None and min(ink.size) >= SPECKLE_MIN_SIDE:
        # Only the raw box (+2 px of zeros) can hold ink, so filtering it alone is exact.
        left, top = max(box[0] - 2, 0), max(box[1] - 2, 0)
        region = (left, top, min(box[2] + 2, ink.width), min(box[3] + 2, ink.height))
        core = ink.crop(region).filter(ImageFilter.BoxBlur(1)).point(_SPECKLE_LUT).getbbox()
        if core is not None:  # the 3x3 mean rounds stroke ends off by one pixel: give them
            # back, as the ink itself within that pixel (never a blank margin around the digit)
            near = (
                max(left + core[0] - 1, 0),
                max(top + core[1] - 1, 0),
                min(left + core[2] + 1, ink.width),
                min(top + core[3] + 1, ink.height),
            )
            inner = ink.crop(near).getbbox()  # never None: every core pixel has ink beside it
            box = (near[0] + inner[0], near[1] + inner[1], near[0] + inner[2], near[1] + inner[3])
    if box is None or max(box[2] - box[0], box[3] - box[1]) < MIN_EXTENT * max(ink.size):
        raise EmptyCanvasError()
    return box


def _stretch(crop: Image.Image) -> Image.Image:
    """Scale the ink so its strongest pixel is full white (grey or coloured pens)."""
    top = crop.getextrema()[1]
    if top >= 255:
        return crop
    return crop.point([min(255, round(v * 255 / top)) for v in range(256)])


def _resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Anti-aliased resize (area-weighted when shrinking)."""
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _to_mnist(crop: Image.Image) -> tuple[Image.Image, np.ndarray]:
    """Fit into 20x20 keeping the aspect ratio, place by centre of mass in 28x28."""
    w, h = crop.size
    scale = MNIST_BOX / max(w, h)
    small = _resize(crop, (max(1, round(w * scale)), max(1, round(h * scale))))
    patch = np.asarray(small)  # (h', w') uint8, longer side 20
    mass = patch.astype(np.float64)
    total = mass.sum()
    out = np.zeros((28, 28), np.uint8)
    if total == 0:  # a faint crop that vanished in the resize: centre the box instead
        cy, cx = (patch.shape[0] - 1) / 2, (patch.shape[1] - 1) / 2
    else:
        cy = float(mass.sum(axis=1) @ np.arange(patch.shape[0])) / total
        cx = float(mass.sum(axis=0) @ np.arange(patch.shape[1])) / total
    # Whole-pixel shift, clamped so no ink is cut off at the frame.
    top = int(np.clip(round(MNIST_CENTRE - cy), 0, 28 - patch.shape[0]))
    left = int(np.clip(round(MNIST_CENTRE - cx), 0, 28 - patch.shape[1]))
    out[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
    return crop, out


def _to_box(crop: Image.Image) -> tuple[Image.Image, np.ndarray]:
    """Pad to a centred square with 20% margins, resize to 28x28."""
    w, h = crop.size
    side = max(w, h) + 2 * round(BOX_PADDING * max(w, h))
    square = Image.new("L", (side, side), 0)
    square.paste(crop, ((side - w) // 2, (side - h) // 2))
    return square, np.asarray(_resize(square, (28, 28)))
