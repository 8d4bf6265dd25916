"""On-device augmentation: random affine warps, re-centring and stroke thickness, inside the jit.

A pure function of (key, images): no host pipeline, so it runs unchanged on CPU, GPU and TPU, and
the key is drawn from (seed, step), so a resumed run replays the same distortions. Shapes are
fixed: images (B, 28, 28, 1) float32 in [0, 1], white digit on black.

Per augmented image: strokes thickened (grey dilation) or thinned (grey erosion) by a
fractional amount; then rotated and slanted about the frame's centre, re-centred the MNIST way
(the warped ink box fitted to 20 px, its centre of mass at pixel (14, 14)), then jittered in
scale and position (what the page's whole-pixel placement and a person's drawing vary), all
composed into one bilinear resampling. Changing the strokes first is what the served path sees:
a person draws with some pen width and the page's preprocessing then fits that drawing's ink
box to 20 px, so a thick-stroked digit arrives smaller, never wider than the box. (It is also
the cheap order on CPU: XLA fuses the resampling's arithmetic into every tap of the 3x3
windows that come after it, so the stroke change after the warp cost 3x the warp itself.)

An elastic distortion (Augment.elastic > 0) bends the digit by a smooth random displacement
field, drawn at ELASTIC_KNOTS x ELASTIC_KNOTS knots and blended bilinearly between them, added
to the output grid before the same single resampling. Neither recipe uses it: on the robust
CNN it moved clean accuracy within seed noise and cost the thick-stroke levels
(docs/experiments/2026-12-03-robust-cnn-recipe.md).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from flaxdigits.training.config import Augment

SIDE = 28
FRAME_CENTRE = (SIDE - 1) / 2  # 13.5: the affine maps turn about the middle of the frame
MNIST_CENTRE = 14.0  # where MNIST (and the page's preprocessing) puts the centre of mass
MNIST_BOX = 20.0  # the longer side of the ink box
INK_LEVEL = 0.1  # a pixel above this counts towards the ink box
MAX_REFIT = 1.6  # the box refit never magnifies more than this (a short stroke stays short)
MAX_DILATIONS = 3  # the most a stroke can be thickened: 3 px per side
ELASTIC_KNOTS = 4  # the elastic field is drawn at 4 x 4 knots over the frame, smooth between
ELASTIC_STREAM = 0x454C  # fold_in of a step's parameter key: the elastic field's own draw
# Stream of the augmentation keys, apart from the epoch-order keys fold_in(rng, epoch).
AUGMENT_STREAM = 0x41554731


def step_key(rng: jax.Array, step: jax.Array) -> jax.Array:
    """The augmentation key of one step: a function of (seed, step) only."""
    return jax.random.fold_in(jax.random.fold_in(rng, AUGMENT_STREAM), step)


def affine_matrices(rotation, scale, slant) -> jax.Array:
    """(B, 2, 2) forward maps on (y, x) offsets: scale * rotate * slant (x += slant * y)."""
    theta = jnp.deg2rad(rotation)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    rot = jnp.stack([jnp.stack([cos, -sin], -1), jnp.stack([sin, cos], -1)], -2)  # (B, 2, 2)
    one, zero = jnp.ones_like(slant), jnp.zeros_like(slant)
    shear = jnp.stack([jnp.stack([one, zero], -1), jnp.stack([slant, one], -1)], -2)
    return scale[:, None, None] * rot @ shear


GRID = jnp.stack(jnp.meshgrid(jnp.arange(SIDE), jnp.arange(SIDE), indexing="ij"), -1)
GRID = GRID.reshape(-1, 2).astype(jnp.float32)  # (784, 2): every pixel's (y, x), row-major


def apply_2x2(m: jax.Array, points: jax.Array) -> jax.Array:
    """m (B, 2, 2) applied to points (B or 1, P, 2): (B, P, 2). Written out elementwise: XLA:CPU
    runs a batched 2x2 matrix product as a slow dot."""
    y, x = points[..., 0], points[..., 1]
    return jnp.stack(
        [
            m[:, 0, 0, None] * y + m[:, 0, 1, None] * x,
            m[:, 1, 0, None] * y + m[:, 1, 1, None] * x,
        ],
        -1,
    )


def inverse_2x2(m: jax.Array) -> jax.Array:
    """Inverses of (B, 2, 2) matrices, written out (a batched LAPACK call costs ms on CPU)."""
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    det = a * d - b * c
    return jnp.stack([jnp.stack([d, -b], -1), jnp.stack([-c, a], -1)], -2) / det[:, None, None]


def sample(images: jax.Array, source: jax.Array) -> jax.Array:
    """Bilinear samples of images (B, 28, 28) at source (B, 784, 2) (y, x); zero outside.

    Each of the four neighbours is one flat gather from the image with a zero appended, where
    out-of-frame neighbours point (jax.scipy.ndimage.map_coordinates computes the same values
    through a general N-d path that costs ~20x more here on CPU).
    """
    batch = images.shape[0]
    flat = jnp.concatenate([images.reshape(batch, -1), jnp.zeros((batch, 1), images.dtype)], 1)
    low = jnp.floor(source)
    frac = source - low  # (B, 784, 2)
    low = low.astype(jnp.int32)
    out = jnp.zeros(source.shape[:2], images.dtype)
    for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
        y, x = low[..., 0] + dy, low[..., 1] + dx
        inside = (y >= 0) & (y < SIDE) & (x >= 0) & (x < SIDE)
        index = jnp.where(inside, y * SIDE + x, SIDE * SIDE)
        weight = (frac[..., 0] if dy else 1 - frac[..., 0]) * (
            frac[..., 1] if dx else 1 - frac[..., 1]
        )
        out = out + weight * jnp.take_along_axis(flat, index, axis=1)
    return out.reshape(batch, SIDE, SIDE)


def refit_map(images, matrices, shifts, scales):
    """The forward map (B, 2, 2) and offset (B, 2) of a warp followed by MNIST re-centring, then
    a small jitter of the re-centred digit (scale factor, shift in pixels).

    The warp sends pixel p to M (p - c) + c (c: frame centre). Its ink box and centre of mass
    are computed from the original ink's pixels sent through it (exact for an affine map); the
    box is fitted to 20 px (never magnified more than MAX_REFIT) and the mass moved to (14, 14):
    p -> f M (p - c) + f (c - mass) + 14; the jitter then scales about (14, 14) and shifts.
    """
    offsets = GRID - FRAME_CENTRE  # (784, 2)
    moved = apply_2x2(matrices, offsets[None]) + FRAME_CENTRE  # (B, 784, 2)
    ink = images.reshape(images.shape[0], -1)  # (B, 784)
    inked = (ink > INK_LEVEL)[..., None]
    low = jnp.min(jnp.where(inked, moved, jnp.inf), axis=1)
    high = jnp.max(jnp.where(inked, moved, -jnp.inf), axis=1)
    longest = jnp.max(high - low, axis=1) + 1.0  # (B,) in pixels
    longest = jnp.where(jnp.isfinite(longest), jnp.maximum(longest, 1.0), MNIST_BOX)  # no ink
    fit = jnp.minimum(MNIST_BOX / longest, MAX_REFIT) * scales
    total = jnp.maximum(jnp.sum(ink, axis=1, keepdims=True), 1e-6)
    mass = jnp.sum(ink[..., None] * moved, axis=1) / total  # (B, 2)
    offset = fit[:, None] * (FRAME_CENTRE - mass) + MNIST_CENTRE + shifts
    return fit[:, None, None] * matrices, offset


def _window3(images: jax.Array, op, fill: float) -> jax.Array:
    """op over each 3x3 neighbourhood of (B, 28, 28), `fill` beyond the frame: a max or min,
    so the 3x3 window is a 3-row window then a 3-column one (6 comparisons a pixel instead of 9;
    the same values bit for bit, and the distortion ~1.4x faster on the 2-core Xeon). Each is a
    reduce_window: in the augmentation graph XLA:CPU does not copy it into each consumer, which
    it did with an equivalent max of shifted slices."""
    rows = jax.lax.reduce_window(images, fill, op, (1, 3, 1), (1, 1, 1), "SAME")
    return jax.lax.reduce_window(rows, fill, op, (1, 1, 3), (1, 1, 1), "SAME")


def grey_dilate(images: jax.Array) -> jax.Array:
    """3x3 grey dilation of (B, 28, 28): strokes one pixel wider on each side."""
    return _window3(images, jax.lax.max, -jnp.inf)


def grey_erode(images: jax.Array) -> jax.Array:
    """3x3 grey erosion of (B, 28, 28): strokes one pixel narrower on each side."""
    return _window3(images, jax.lax.min, jnp.inf)


def change_thickness(images: jax.Array, amount: jax.Array) -> jax.Array:
    """Fractional stroke change per image: amount (B,) in px per side, < 0 thins, > 0 thickens.

    Between whole steps the result is the linear blend of the neighbouring whole steps (up to
    MAX_DILATIONS dilations; 0 or 1 erosion), so the stroke width changes continuously with
    amount; beyond the last whole step it stays there.
    """
    a = amount[:, None, None]
    thick, previous = images, images
    for k in range(MAX_DILATIONS):
        dilated = grey_dilate(previous)
        thick = thick + jnp.clip(a - k, 0, 1) * (dilated - previous)
        previous = dilated
    thin = images + jnp.clip(-a, 0, 1) * (grey_erode(images) - images)
    return jnp.where(a >= 0, thick, thin)


def _elastic_basis(side: int = SIDE, knots: int = ELASTIC_KNOTS) -> np.ndarray:
    """(side * side, knots * knots) weights: a field given at a knots x knots grid spanning the
    frame, interpolated bilinearly at every pixel (row-major), so each pixel's displacement is a
    smooth blend of its four nearest knots'."""
    position = np.arange(side) * (knots - 1) / (side - 1)
    low = np.minimum(np.floor(position).astype(int), knots - 2)
    frac = position - low
    one_axis = np.zeros((side, knots))
    one_axis[np.arange(side), low] = 1 - frac
    one_axis[np.arange(side), low + 1] += frac
    return np.einsum("yi,xj->yxij", one_axis, one_axis).reshape(side * side, knots * knots)


ELASTIC_BASIS = jnp.asarray(_elastic_basis(), jnp.float32)  # (784, knots^2)


def elastic_field(knots: jax.Array) -> jax.Array:
    """(B, knots^2, 2) knot displacements -> (B, 784, 2) smooth per-pixel displacements."""
    return jnp.einsum("pk,bkc->bpc", ELASTIC_BASIS, knots)


def sample_parameters(key: jax.Array, batch: int, aug: Augment) -> dict[str, jax.Array]:
    """Per-image distortion parameters, each uniform in the recipe's range."""
    keys = jax.random.split(key, 6)

    def uniform(k, low, high, shape=(batch,)):
        return jax.random.uniform(k, shape, jnp.float32, low, high)

    extra = {}
    if aug.elastic:  # its own key: the other parameters stay those of a recipe without it
        elastic_key = jax.random.fold_in(key, ELASTIC_STREAM)
        extra["elastic"] = uniform(
            elastic_key, -aug.elastic, aug.elastic, (batch, ELASTIC_KNOTS**2, 2)
        )
    return extra | {
        "rotation": uniform(keys[0], -aug.rotation, aug.rotation),
        "scale": uniform(keys[1], *aug.scale),
        "slant": uniform(keys[2], -aug.slant, aug.slant),
        "shift": uniform(keys[3], -aug.shift, aug.shift, (batch, 2)),
        "thickness": uniform(keys[4], *aug.thickness),
        "draw": uniform(keys[5], 0.0, 1.0),  # compared with the share: augmented or clean
    }


def distort(images: jax.Array, params: dict[str, jax.Array], recentre: bool = True) -> jax.Array:
    """images (B, 28, 28) -> the same digits distorted by params (see sample_parameters).

    The stroke change, then one bilinear resampling of the changed digit (the re-centring of
    its ink box is composed into the warp), then the ink stretched so its strongest pixel is
    white again, as the page's preprocessing does.
    """
    images = jnp.clip(change_thickness(images, params["thickness"]), 0.0, 1.0)
    shifts, scales = params["shift"], params["scale"]
    if recentre:  # rotate and slant, re-centre, then jitter the scale and position
        matrices = affine_matrices(params["rotation"], jnp.ones_like(scales), params["slant"])
        matrices, offsets = refit_map(images, matrices, shifts, scales)
    else:
        matrices = affine_matrices(params["rotation"], scales, params["slant"])
        offsets = FRAME_CENTRE + shifts
    # Output pixel q comes from M^-1 (q + d(q) - offset) + c, d the elastic field (if any).
    target = GRID[None] - offsets[:, None]
    if "elastic" in params:
        target = target + elastic_field(params["elastic"])
    source = apply_2x2(inverse_2x2(matrices), target)
    warped = sample(images, source + FRAME_CENTRE)
    top = jnp.max(warped, axis=(1, 2), keepdims=True)
    return jnp.where(top > 0, warped / jnp.maximum(top, 1e-6), warped)


def augmented_rows(batch: int, aug: Augment) -> int:
    """How many images of a batch of `batch` can be distorted at most: the first
    ceil(max share * batch). The batch is in the epoch's random order, so they are a random
    sample; the rest of the batch is never distorted, and costs nothing."""
    return min(batch, math.ceil(max(aug.share, aug.share_end) * batch - 1e-9))


def augment_batch(key: jax.Array, images: jax.Array, aug: Augment, progress) -> jax.Array:
    """A share of a batch (B, 28, 28, 1) distorted, the rest left as it is.

    progress in [0, 1] (the share of training done) moves the share linearly from aug.share to
    aug.share_end: each image is distorted with that probability. Only the first
    augmented_rows(B) images are candidates (each drawn with probability share * B / rows), so a
    recipe that distorts 70% of a batch at most computes 70% of its distortions, not all of
    them. Labels are untouched: a distortion never changes what digit it is.
    """
    batch = images.shape[0]
    rows = augmented_rows(batch, aug)
    if rows == 0:
        return images
    params = sample_parameters(key, rows, aug)
    share = aug.share + (aug.share_end - aug.share) * progress
    candidates = images[:rows]
    chosen = params["draw"] * rows < share * batch
    if aug.mild:  # the candidates not chosen are distorted mildly instead of left clean
        params = mild_parameters(params, jnp.where(chosen, 1.0, aug.mild))
    distorted = distort(candidates[..., 0], params, aug.recentre)[..., None]
    if not aug.mild:
        distorted = jnp.where(chosen[:, None, None, None], distorted, candidates)
    return jnp.concatenate([distorted, images[rows:]], axis=0)


MILD_SCALED = ("rotation", "slant", "thickness", "elastic")  # the shape changes, not placement


def mild_parameters(params: dict[str, jax.Array], factor: jax.Array) -> dict[str, jax.Array]:
    """params with each row's shape changes (MILD_SCALED) multiplied by its factor (B,)."""

    def scaled(value):
        return value * factor.reshape(factor.shape + (1,) * (value.ndim - 1))

    return params | {k: scaled(v) for k, v in params.items() if k in MILD_SCALED}
