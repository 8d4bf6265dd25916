"""Held-out non-digits: drawings that are not digits, made by generators training never used.

Training's non-digits (training/outliers.py) are strokes drawn on the device: scribbles, letters
and symbols from stroke templates, filled ellipses, pairs of digits. The ones here are made
another way, to measure what a model does with kinds it never saw:

- font: letters and symbols typed in real fonts (DejaVu Sans, Serif and Mono in several styles,
  and STIX, from matplotlib's font files; Pillow's own font where those are missing), each
  glyph on a canvas as a drawing;
- doodle: things people draw on a digit pad, drawn with Pillow's pen: spirals, houses, suns,
  hatchings, waves, flowers, clouds, grids, ticks and crosses in boxes.

Letters and symbols that are drawn like a digit are left out (LOOKS_LIKE_A_DIGIT: a typed O is a
fair 0, an l a 1). Each canvas then goes through the served preprocessing (`mnist`), as the page
treats a drawing. numpy and Pillow only; deterministic for a seed.
"""

from __future__ import annotations

import importlib.util
import math
import string
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from flaxdigits.serve.runtime.preprocess import ImageInputError, preprocess

CANVAS = 280  # px, as the page's drawing area is about
LOOKS_LIKE_A_DIGIT = set("OoQDIlijJ|!SsZzBbGgqT()[]{}/\\'`.,:;-_\"")
LETTERS = [c for c in string.ascii_letters if c not in LOOKS_LIKE_A_DIGIT]
SYMBOLS = [c for c in "#@&%$?*+=~^<>€£¥§¶©®×÷∞≠" if c not in LOOKS_LIKE_A_DIGIT]
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSansMono.ttf",
    "STIXGeneral.ttf",
)


def font_paths() -> list[Path]:
    """matplotlib's font files of FONT_FILES that exist (found, not imported)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"
    return [folder / name for name in FONT_FILES if (folder / name).is_file()]


def _fonts(size: int) -> list[ImageFont.FreeTypeFont]:
    found = [ImageFont.truetype(str(p), size) for p in font_paths()]
    return found or [ImageFont.load_default(size=size)]


def glyph_canvas(char: str, font, rng: np.random.Generator) -> Image.Image:
    """One glyph, black on white, somewhere on the canvas and a little rotated."""
    img = Image.new("L", (CANVAS, CANVAS), 255)
    draw = ImageDraw.Draw(img)
    x, y = (float(v) for v in rng.uniform(0.3, 0.7, 2) * CANVAS)
    draw.text((x, y), char, fill=0, font=font, anchor="mm")
    return img.rotate(float(rng.uniform(-15, 15)), fillcolor=255)


def _pen(rng: np.random.Generator) -> int:
    return int(rng.integers(6, 22))


def _spiral(draw, rng, c):
    turns, pts = rng.uniform(1.5, 3.0), []
    for t in np.linspace(0, turns * 2 * math.pi, 80):
        r = 8 + 90 * t / (turns * 2 * math.pi)
        pts.append((c + r * math.cos(t), c + r * math.sin(t)))
    draw.line(pts, fill=0, width=_pen(rng), joint="curve")


def _house(draw, rng, c):
    w, pen = rng.uniform(60, 100), _pen(rng)
    draw.rectangle((c - w, c, c + w, c + 1.6 * w * 0.8), outline=0, width=pen)
    draw.line([(c - w, c), (c, c - w), (c + w, c)], fill=0, width=pen, joint="curve")


def _sun(draw, rng, c):
    r, pen = rng.uniform(25, 40), _pen(rng)
    draw.ellipse((c - r, c - r, c + r, c + r), outline=0, width=pen)
    for a in np.linspace(0, 2 * math.pi, int(rng.integers(6, 11)), endpoint=False):
        draw.line(
            [
                (c + 1.5 * r * math.cos(a), c + 1.5 * r * math.sin(a)),
                (c + 2.6 * r * math.cos(a), c + 2.6 * r * math.sin(a)),
            ],
            fill=0,
            width=pen,
        )


def _hatch(draw, rng, c):
    n, pen, a = int(rng.integers(3, 6)), _pen(rng), rng.uniform(0, math.pi)
    d = (math.cos(a) * 100, math.sin(a) * 100)
    for k in np.linspace(-80, 80, n):
        o = (-math.sin(a) * k, math.cos(a) * k)
        draw.line(
            [(c + o[0] - d[0], c + o[1] - d[1]), (c + o[0] + d[0], c + o[1] + d[1])],
            fill=0,
            width=pen,
        )


def _wave(draw, rng, c):
    amp, f = rng.uniform(20, 50), rng.uniform(2, 4)
    pts = [(c - 110 + x, c + amp * math.sin(f * x / 35)) for x in np.linspace(0, 220, 60)]
    draw.line(pts, fill=0, width=_pen(rng), joint="curve")


def _flower(draw, rng, c):
    pen, n = _pen(rng), int(rng.integers(5, 8))
    for a in np.linspace(0, 2 * math.pi, n, endpoint=False):
        x, y = c + 45 * math.cos(a), c - 40 + 45 * math.sin(a)
        draw.ellipse((x - 22, y - 22, x + 22, y + 22), outline=0, width=pen)
    draw.line([(c, c - 10), (c, c + 120)], fill=0, width=pen)


def _cloud(draw, rng, c):
    pen = _pen(rng)
    for dx in (-60, -20, 20, 60):
        r = rng.uniform(25, 40)
        draw.arc((c + dx - r, c - r, c + dx + r, c + r), 180, 360, fill=0, width=pen)
    draw.line([(c - 95, c), (c + 95, c)], fill=0, width=pen)


def _grid(draw, rng, c):
    pen, n = _pen(rng), int(rng.integers(2, 4))
    for k in np.linspace(-90, 90, n + 1):
        draw.line([(c + k, c - 90), (c + k, c + 90)], fill=0, width=pen)
        draw.line([(c - 90, c + k), (c + 90, c + k)], fill=0, width=pen)


def _boxed_mark(draw, rng, c):
    pen, w = _pen(rng), rng.uniform(50, 90)
    draw.rectangle((c - w, c - w, c + w, c + w), outline=0, width=pen)
    if rng.random() < 0.5:  # a tick
        draw.line(
            [(c - 0.6 * w, c), (c - 0.1 * w, c + 0.5 * w), (c + 0.7 * w, c - 0.6 * w)],
            fill=0,
            width=pen,
            joint="curve",
        )
    else:  # a cross
        draw.line([(c - 0.6 * w, c - 0.6 * w), (c + 0.6 * w, c + 0.6 * w)], fill=0, width=pen)
        draw.line([(c - 0.6 * w, c + 0.6 * w), (c + 0.6 * w, c - 0.6 * w)], fill=0, width=pen)


DOODLES: dict[str, Callable] = {
    "spiral": _spiral,
    "house": _house,
    "sun": _sun,
    "hatching": _hatch,
    "wave": _wave,
    "flower": _flower,
    "cloud": _cloud,
    "grid": _grid,
    "boxed mark": _boxed_mark,
}


def doodle_canvas(name: str, rng: np.random.Generator) -> Image.Image:
    """One doodle, black on white, drawn about the canvas's middle and a little rotated."""
    img = Image.new("L", (CANVAS, CANVAS), 255)
    DOODLES[name](ImageDraw.Draw(img), rng, CANVAS / 2 + rng.uniform(-20, 20))
    return img.rotate(float(rng.uniform(-20, 20)), fillcolor=255)


def heldout_canvases(per_doodle: int = 40, seed: int = 0):
    """[(kind, name, canvas)]: every letter and symbol in every font, and per_doodle of each
    doodle."""
    rng = np.random.default_rng(seed)
    out = []
    for font in _fonts(180):
        for char in LETTERS + SYMBOLS:
            kind = "letter" if char in LETTERS else "symbol"
            out.append((kind, char, glyph_canvas(char, font, rng)))
    for name in DOODLES:
        out.extend(("doodle", name, doodle_canvas(name, rng)) for _ in range(per_doodle))
    return out


def heldout_inputs(per_doodle: int = 40, seed: int = 0, method: str = "mnist"):
    """(images (N, 28, 28) float32, kinds, names): the held-out canvases as the page's
    preprocessing hands them to a model (a canvas it refuses is left out)."""
    images, kinds, names = [], [], []
    for kind, name, canvas in heldout_canvases(per_doodle, seed):
        try:
            images.append(preprocess(canvas, method).image)
        except ImageInputError:
            continue
        kinds.append(kind)
        names.append(name)
    return np.stack(images), kinds, names
