"""Non-digits drawn on the device, for training models that say "that is not a digit".

A pure function of (key, digits): no host pipeline, the same on CPU, GPU and TPU, and the key comes
from (seed, step), so a resumed run replays the same non-digits. Every image comes out as the
page's `mnist` preprocessing hands a drawing to a model: ink box fitted to 20 px, centre of mass
at (14, 14), strongest pixel white (augment.distort with no distortion does exactly that).

Kinds (in equal shares, kind_counts):
- scribble: a random polyline of 5 to 9 points (fewer can draw a 1, 7 or L), pen width varying
  per image;
- letter: a capital letter or a symbol from STROKE_TEMPLATES (strokes in a unit box), sheared,
  rotated, stretched and its points jittered;
- blob: one to three filled ellipses, none thinner than half its length (a thin one is a 1);
- pair: two of the batch's digits side by side, each squeezed into half the frame.

Digit fragments (a digit cut by a line) were tried and left out: the part left of a 1 or a 7 is
still a 1 or a 7, and of many others a fair digit.

Letters that are drawn like digits (O, I, S, Z, B, G, l, q, g) are not among the templates: a
drawn O is a fair 0. Nor are shapes that a rotated or slanted digit can take (V, Y, an arrow, a
triangle, a star: a 7, a 4 or a 1 turned by the robust recipe's ±40°): with them in, the robust
CNN lost 2-6 points on digits rotated by 45° (docs/experiments/2026-12-05-not-a-digit.md).
The held-out kinds the report measures against (font-rendered letters and symbols, shapes drawn
by Pillow: flaxdigits/evaluation/nondigits.py) are never generated here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flaxdigits.training import augment
from flaxdigits.training.config import OUTLIER_KINDS

OUTLIER_STREAM = 0x4F4F44  # "OOD": fold_in of a step's augmentation key, the non-digits' draw
KINDS = OUTLIER_KINDS  # ("scribble", "letter", "blob", "pair")
MAX_SEGMENTS = 12  # strokes per image (templates and scribbles padded to this)
MAX_POINTS = 9  # of a scribble's polyline


def _arc(cy, cx, ry, rx, start, stop, n):
    """n segments of an ellipse arc (angles in degrees, 0 = right, counter-clockwise, y down)."""
    t = np.deg2rad(np.linspace(start, stop, n + 1))
    pts = np.stack([cy - ry * np.sin(t), cx + rx * np.cos(t)], -1)
    return [(tuple(a), tuple(b)) for a, b in zip(pts[:-1], pts[1:], strict=True)]


def _lines(*points):
    """Segments of a polyline through points (y, x)."""
    return [(points[i], points[i + 1]) for i in range(len(points) - 1)]


# Capital letters and symbols as strokes, (y, x) in a unit box, y down.
STROKE_TEMPLATES: dict[str, list] = {
    "A": _lines((1, 0), (0, 0.5), (1, 1)) + _lines((0.6, 0.2), (0.6, 0.8)),
    "E": _lines((0, 1), (0, 0), (1, 0), (1, 1)) + _lines((0.5, 0), (0.5, 0.8)),
    "F": _lines((0, 1), (0, 0), (1, 0)) + _lines((0.5, 0), (0.5, 0.8)),
    "H": _lines((0, 0), (1, 0)) + _lines((0, 1), (1, 1)) + _lines((0.5, 0), (0.5, 1)),
    "K": _lines((0, 0), (1, 0)) + _lines((0, 1), (0.5, 0), (1, 1)),
    "M": _lines((1, 0), (0, 0), (0.6, 0.5), (0, 1), (1, 1)),
    "N": _lines((1, 0), (0, 0), (1, 1), (0, 1)),
    "W": _lines((0, 0), (1, 0.25), (0.4, 0.5), (1, 0.75), (0, 1)),
    "X": _lines((0, 0), (1, 1)) + _lines((0, 1), (1, 0)),
    "R": _lines((1, 0), (0, 0), (0, 0.6))
    + _arc(0.25, 0.6, 0.25, 0.35, 90, -90, 4)
    + _lines((0.5, 0.6), (0.5, 0), (0.5, 0.4), (1, 1)),
    "P": _lines((1, 0), (0, 0), (0, 0.6))
    + _arc(0.25, 0.6, 0.25, 0.35, 90, -90, 4)
    + _lines((0.5, 0.6), (0.5, 0)),
    "D": _lines((0, 0), (1, 0)) + _arc(0.5, 0.2, 0.5, 0.8, 90, -90, 6) + _lines((0, 0), (0, 0.2)),
    "U": _lines((0, 0), (0.6, 0))
    + _arc(0.6, 0.5, 0.4, 0.5, 180, 360, 6)
    + _lines((0.6, 1), (0, 1)),
    "C": _arc(0.5, 0.5, 0.5, 0.5, 45, 315, 8),
    "#": _lines((0, 0.35), (1, 0.25))
    + _lines((0, 0.75), (1, 0.65))
    + _lines((0.33, 0), (0.33, 1))
    + _lines((0.66, 0), (0.66, 1)),
    "+": _lines((0, 0.5), (1, 0.5)) + _lines((0.5, 0), (0.5, 1)),
    "*": _lines((0, 0.5), (1, 0.5))
    + _lines((0.2, 0.1), (0.8, 0.9))
    + _lines((0.2, 0.9), (0.8, 0.1)),
    "=": _lines((0.3, 0), (0.3, 1)) + _lines((0.7, 0), (0.7, 1)),
    "smiley": _arc(0.5, 0.5, 0.5, 0.5, 0, 360, 8)[:8]
    + _arc(0.55, 0.5, 0.2, 0.25, 200, 340, 2)
    + _lines((0.3, 0.33), (0.38, 0.33))
    + _lines((0.3, 0.67), (0.38, 0.67)),
    "heart": _arc(0.3, 0.27, 0.22, 0.25, 0, 200, 3)
    + _arc(0.3, 0.73, 0.22, 0.25, -20, 180, 3)
    + _lines((0.38, 0.03), (1, 0.5), (0.38, 0.97)),
    "square": _lines((0, 0), (0, 1), (1, 1), (1, 0), (0, 0)),
    # lower case, in an x-height box
    "a": _arc(0.62, 0.45, 0.38, 0.45, 0, 360, 6) + _lines((0.2, 0.9), (1, 0.95)),
    "e": _lines((0.55, 0.05), (0.55, 0.95)) + _arc(0.55, 0.5, 0.45, 0.45, 0, 315, 7),
    "h": _lines((0, 0), (1, 0)) + _arc(0.6, 0.5, 0.35, 0.5, 180, 0, 4) + _lines((0.6, 1), (1, 1)),
    "m": _lines((0.25, 0), (1, 0))
    + _arc(0.55, 0.25, 0.3, 0.25, 180, 0, 4)
    + _lines((0.55, 0.5), (1, 0.5))
    + _arc(0.55, 0.75, 0.3, 0.25, 180, 0, 4)
    + _lines((0.55, 1), (1, 1)),
    "n": _lines((0.2, 0), (1, 0)) + _arc(0.6, 0.5, 0.4, 0.5, 180, 0, 4) + _lines((0.6, 1), (1, 1)),
    "r": _lines((0.2, 0), (1, 0)) + _arc(0.6, 0.6, 0.4, 0.6, 180, 60, 3),
    "?": _arc(0.3, 0.5, 0.3, 0.4, 160, -90, 5)
    + _lines((0.6, 0.5), (0.78, 0.5))
    + _lines((0.95, 0.48), (1, 0.52)),
    "%": _arc(0.2, 0.2, 0.2, 0.2, 0, 360, 4)
    + _arc(0.8, 0.8, 0.2, 0.2, 0, 360, 4)
    + _lines((1, 0), (0, 1)),
}


def _template_table() -> tuple[np.ndarray, np.ndarray]:
    """(T, MAX_SEGMENTS, 2, 2) segment endpoints and (T, MAX_SEGMENTS) validity."""
    segs = np.zeros((len(STROKE_TEMPLATES), MAX_SEGMENTS, 2, 2), np.float32)
    valid = np.zeros((len(STROKE_TEMPLATES), MAX_SEGMENTS), bool)
    for t, strokes in enumerate(STROKE_TEMPLATES.values()):
        if len(strokes) > MAX_SEGMENTS:
            raise ValueError(f"template {t} has {len(strokes)} strokes > {MAX_SEGMENTS}")
        segs[t, : len(strokes)] = np.asarray(strokes, np.float32)
        valid[t, : len(strokes)] = True
    return segs, valid


TEMPLATES, TEMPLATE_VALID = (jnp.asarray(a) for a in _template_table())


def render_strokes(segments: jax.Array, valid: jax.Array, width: jax.Array) -> jax.Array:
    """(N, S, 2, 2) segments in pixels, (N, S) validity, (N,) pen half-widths -> (N, 28, 28).

    Each pixel's ink falls off linearly over one pixel past the pen's half-width from the
    nearest valid segment (anti-aliased strokes). Written per coordinate, with no trailing axis
    of 2: XLA:CPU runs it several times faster so."""
    py, px = augment.GRID[None, :, None, 0], augment.GRID[None, :, None, 1]  # (1, 784, 1)
    ay, ax = segments[:, None, :, 0, 0], segments[:, None, :, 0, 1]  # (N, 1, S)
    dy, dx = segments[:, None, :, 1, 0] - ay, segments[:, None, :, 1, 1] - ax
    t = ((py - ay) * dy + (px - ax) * dx) / jnp.maximum(dy * dy + dx * dx, 1e-6)
    t = jnp.clip(t, 0.0, 1.0)
    ey, ex = py - ay - t * dy, px - ax - t * dx
    squared = jnp.where(valid[:, None], ey * ey + ex * ex, jnp.inf)  # (N, 784, S)
    distance = jnp.sqrt(jnp.min(squared, axis=-1))
    ink = jnp.clip(width[:, None] + 0.5 - distance, 0.0, 1.0)
    return ink.reshape(-1, augment.SIDE, augment.SIDE)


def _to_frame(points: jax.Array) -> jax.Array:
    """Points (N, ..., 2) in a unit box -> pixels in the 20-px box around the frame's centre."""
    return 4.0 + 19.0 * points


def scribbles(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Random polylines: (N, S, 2, 2) segments in the unit box, (N, S) validity."""
    k_pts, k_len = jax.random.split(key)
    points = jax.random.uniform(k_pts, (n, MAX_POINTS, 2))
    count = jax.random.randint(k_len, (n, 1), 5, MAX_POINTS + 1)  # points per polyline
    segs = jnp.stack([points[:, :-1], points[:, 1:]], axis=2)  # (N, MAX_POINTS - 1, 2, 2)
    valid = jnp.arange(MAX_POINTS - 1)[None] < count - 1
    pad = MAX_SEGMENTS - (MAX_POINTS - 1)
    segs = jnp.pad(segs, ((0, 0), (0, pad), (0, 0), (0, 0)))
    return segs, jnp.pad(valid, ((0, 0), (0, pad)))


def letters(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Stroke templates, each warped (rotation ±20°, slant ±0.3, stretch 0.6-1.4 per axis) and
    its endpoints jittered by up to 0.06 of the box."""
    k_pick, k_rot, k_slant, k_stretch, k_jitter = jax.random.split(key, 5)
    pick = jax.random.randint(k_pick, (n,), 0, TEMPLATES.shape[0])
    segs, valid = TEMPLATES[pick], TEMPLATE_VALID[pick]
    rotation = jax.random.uniform(k_rot, (n,), minval=-20.0, maxval=20.0)
    slant = jax.random.uniform(k_slant, (n,), minval=-0.3, maxval=0.3)
    matrices = augment.affine_matrices(rotation, jnp.ones((n,)), slant)
    stretch = jax.random.uniform(k_stretch, (n, 1, 1, 2), minval=0.6, maxval=1.4)
    centred = (segs - 0.5) * stretch
    warped = jnp.einsum("nij,nsej->nsei", matrices, centred) + 0.5
    jitter = jax.random.uniform(k_jitter, warped.shape, minval=-0.06, maxval=0.06)
    return warped + jitter, valid


def blobs(key: jax.Array, n: int) -> jax.Array:
    """One to three filled ellipses per image: (N, 28, 28)."""
    k_c, k_r, k_a, k_n = jax.random.split(key, 4)
    centres = _to_frame(jax.random.uniform(k_c, (n, 3, 2), minval=0.2, maxval=0.8))
    k_r, k_ratio = jax.random.split(k_r)
    long = jax.random.uniform(k_r, (n, 3), minval=3.5, maxval=7.0)
    short = long * jax.random.uniform(k_ratio, (n, 3), minval=0.5, maxval=1.0)
    radii = jnp.stack([long, short], -1)
    angle = jax.random.uniform(k_a, (n, 3), maxval=jnp.pi)
    count = jax.random.randint(k_n, (n, 1), 1, 4)
    d = augment.GRID[None, :, None, :] - centres[:, None]  # (N, 784, 3, 2)
    cos, sin = jnp.cos(angle)[:, None], jnp.sin(angle)[:, None]
    u = (d[..., 0] * cos + d[..., 1] * sin) / radii[:, None, :, 0]
    v = (-d[..., 0] * sin + d[..., 1] * cos) / radii[:, None, :, 1]
    inside = jnp.clip((1.0 - jnp.sqrt(u * u + v * v)) * 3.0, 0.0, 1.0)
    inside = jnp.where(jnp.arange(3)[None, None] < count[:, None], inside, 0.0)
    return jnp.max(inside, -1).reshape(n, augment.SIDE, augment.SIDE)


def pairs(key: jax.Array, digits: jax.Array) -> jax.Array:
    """Pairs of the given digits (2M, 28, 28) side by side, each 2x2-averaged into half the
    frame, in a random pairing: (M, 28, 28)."""
    order = jax.random.permutation(key, digits.shape[0])
    small = digits[order].reshape(-1, 2, 14, 2, 14, 2).mean((3, 5))  # (M, 2, 14, 14)
    row = jnp.concatenate([small[:, 0], small[:, 1]], axis=2)  # (M, 14, 28)
    return jnp.pad(row, ((0, 0), (7, 7), (0, 0)))


def recentre(images: jax.Array) -> jax.Array:
    """The page's `mnist` placement of (N, 28, 28): ink box to 20 px, mass at (14, 14)."""
    n = images.shape[0]
    zero = jnp.zeros((n,))
    identity = {
        "rotation": zero,
        "scale": jnp.ones((n,)),
        "slant": zero,
        "shift": jnp.zeros((n, 2)),
        "thickness": zero,
    }
    return augment.distort(images, identity, recentre=True)


def kind_counts(n: int, kinds: tuple[str, ...] = KINDS) -> tuple[int, ...]:
    """How many of n non-digits are of each of KINDS (0 for a kind not in `kinds`): as equal as
    n allows, the first kinds taking the remainder (fixed shapes: each kind is computed for its
    own rows only)."""
    base, extra = divmod(n, len(kinds))
    shares = {k: base + (i < extra) for i, k in enumerate(kinds)}
    return tuple(shares.get(k, 0) for k in KINDS)


def outlier_batch(key: jax.Array, digits: jax.Array, kinds: tuple[str, ...] = KINDS) -> jax.Array:
    """Non-digits (N, 28, 28, 1) of the given kinds (kind_counts), made from key and (for pairs)
    the batch's digits (N, 28, 28, 1) float in [0, 1]: its first ones."""
    n = digits.shape[0]
    n_scribble, n_letter, n_blob, n_pair = kind_counts(n, kinds)
    keys = jax.random.split(jax.random.fold_in(key, OUTLIER_STREAM), 5)
    s_segs, s_valid = scribbles(keys[1], n_scribble)
    l_segs, l_valid = letters(keys[2], n_letter)
    width = jax.random.uniform(keys[0], (n_scribble + n_letter,), minval=0.6, maxval=2.2)
    strokes = render_strokes(
        _to_frame(jnp.concatenate([s_segs, l_segs])), jnp.concatenate([s_valid, l_valid]), width
    )
    parts = [strokes, blobs(keys[3], n_blob), pairs(keys[4], digits[: 2 * n_pair, ..., 0])]
    return recentre(jnp.concatenate(parts))[..., None]
