"""Digits drawn the way a person would, for the preprocessing, decoding and page tests, and the
digit a result card on the page shows."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def draw_digit(size=(300, 300), offset=(0, 0), scale=1.0, width=14) -> np.ndarray:
    """A '7' with a crossbar, black ink on white, as an (H, W) uint8 canvas."""
    img = Image.new("L", size, 255)
    pts = [(90, 70), (200, 70), (130, 230)]
    ox, oy = offset
    pts = [(ox + x * scale, oy + y * scale) for x, y in pts]
    draw = ImageDraw.Draw(img)
    draw.line(pts, fill=0, width=round(width * scale), joint="curve")
    bar = [(ox + 120 * scale, oy + 150 * scale), (ox + 190 * scale, oy + 150 * scale)]
    draw.line(bar, fill=0, width=round(width * scale))
    return np.asarray(img)


def rgba_on_transparent(ink: np.ndarray, colour: int = 0) -> np.ndarray:
    """Strokes of one grey level on a transparent canvas whose hidden RGB is 0 (Sketchpad)."""
    out = np.zeros(ink.shape + (4,), np.uint8)
    out[..., :3] = np.where(ink[..., None] < 128, colour, 0)
    out[..., 3] = 255 - ink
    return out


def drawing(size=(400, 400)) -> Image.Image:
    """A black '7' on white, as a person would draw it on the page."""
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).line([(120, 90), (280, 90), (170, 320)], fill="black", width=24)
    return img


def strokes(lines, size=(400, 400), width=28) -> Image.Image:
    """Black strokes on white through points given as fractions (x, y) of the canvas."""
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for line in lines:
        draw.line([(x * size[0], y * size[1]) for x, y in line], fill="black", width=width)
    return img


# Strokes as fractions of the canvas, as the browser tests draw them with the mouse.
ONE = [[(0.5, 0.15), (0.5, 0.85)]]
LETTER_X = [[(0.25, 0.2), (0.75, 0.8)], [(0.75, 0.2), (0.25, 0.8)]]


def card_digit(card: str) -> str:
    """The digit a result card (page.render_result) shows, "" for none."""
    return card.split('data-digit="', 1)[1].split('"', 1)[0]


def card_answer(card: str) -> str:
    """A result card's answer (contract.ANSWERS), "" for none."""
    return card.split('data-answer="', 1)[1].split('"', 1)[0]


def save(img: Image.Image, path, **kwargs):
    """Save img to path (format options passed on); returns the path."""
    img.save(path, **kwargs)
    return path
