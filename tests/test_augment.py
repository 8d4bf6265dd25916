"""On-device augmentation: identity, a rotation against Pillow, ranges, labels, frame, resume."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from flaxdigits.training import augment
from flaxdigits.training.config import RECIPES, Augment

ROBUST = RECIPES["robust"]["cnn"].augment  # the stronger of the two models'


def params(batch: int, **values) -> dict[str, jax.Array]:
    """Identity distortion parameters, with some of them set."""
    out = {
        "rotation": jnp.zeros(batch),
        "scale": jnp.ones(batch),
        "slant": jnp.zeros(batch),
        "shift": jnp.zeros((batch, 2)),
        "thickness": jnp.zeros(batch),
        "draw": jnp.zeros(batch),
    }
    return out | {
        k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), out[k].shape) for k, v in values.items()
    }


@pytest.fixture(scope="module")
def digits(mnist) -> jax.Array:
    return jnp.asarray(mnist.test_images[:64], jnp.float32) / 255.0  # (64, 28, 28)


def test_identity_parameters_give_the_image_back(digits):
    out = augment.distort(digits, params(64), recentre=False)
    # Only the stretch that makes the strongest pixel white (as the page does) may change it.
    expected = digits / jnp.max(digits, axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), atol=1e-6)


def test_recentring_an_mnist_digit_barely_moves_it(digits):
    # MNIST digits are already box-fitted and mass-centred; re-centring moves them sub-pixel.
    out = augment.distort(digits, params(64), recentre=True)
    assert float(jnp.mean(jnp.abs(out - digits))) < 0.04


def test_a_known_rotation_matches_pillow():
    # A bar off the centre line, rotated 30 degrees about the frame's centre: Pillow's bilinear
    # rotation is the independent reference (same centre convention, counter-clockwise).
    bar = np.zeros((28, 28), np.float32)
    bar[6:22, 12:15] = 1.0
    bar[6:9, 15:20] = 1.0
    ours = np.asarray(augment.distort(jnp.asarray(bar)[None], params(1, rotation=30.0), False))[0]
    pil = Image.fromarray(bar, mode="F").rotate(30.0, resample=Image.Resampling.BILINEAR)
    reference = np.asarray(pil)
    reference = reference / reference.max()
    assert np.mean(np.abs(ours - reference)) < 0.02  # measured: ~0.01, interpolation only
    assert np.max(np.abs(ours - reference)) < 0.5
    # and not the other way round
    wrong = np.asarray(
        Image.fromarray(bar, mode="F").rotate(-30.0, resample=Image.Resampling.BILINEAR)
    )
    assert np.mean(np.abs(ours - wrong / wrong.max())) > 3 * np.mean(np.abs(ours - reference))


def test_thickness_changes_ink_mass_monotonically(digits):
    masses = []
    for amount in (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0):
        out = augment.distort(digits, params(64, thickness=amount), recentre=False)
        masses.append(float(jnp.sum(out)))
    assert masses == sorted(masses) and masses[5] > 1.5 * masses[2] > 1.5 * masses[0]
    assert len(set(masses)) == len(masses)  # every step up to MAX_DILATIONS still thickens
    beyond = augment.distort(digits, params(64, thickness=augment.MAX_DILATIONS + 1.0), False)
    assert float(jnp.sum(beyond)) == masses[-1]  # and it stops there


def test_strokes_change_before_the_refit_so_a_thick_digit_keeps_the_mnist_box(digits):
    """Thickened, then re-centred: the ink box is fitted to 20 px, as the page's preprocessing
    fits a thick-penned drawing; thickening after the refit would spill it to 20 + 2 * amount."""

    def box(images):
        inked = np.asarray(images) > augment.INK_LEVEL
        rows, cols = inked.any(axis=2), inked.any(axis=1)
        extent = lambda a: a.shape[1] - np.argmax(a[:, ::-1], 1) - np.argmax(a, 1)  # noqa: E731
        return np.maximum(extent(rows), extent(cols))

    plain = box(augment.distort(digits, params(64), recentre=True))
    thick = box(augment.distort(digits, params(64, thickness=2.5), recentre=True))
    assert np.all(plain <= 21) and np.all(thick <= 21)  # 20, +1 where bilinear edges reach


def test_augmented_batches_stay_in_range_keep_the_frame_and_the_share(digits):
    images = digits[..., None]
    key = jax.random.PRNGKey(3)
    out = jax.jit(lambda k, x: augment.augment_batch(k, x, ROBUST, 0.0))(key, images)
    assert out.shape == images.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    changed = np.asarray(jnp.any(out != images, axis=(1, 2, 3)))
    assert 0.5 < changed.mean() <= 1.0  # about ROBUST.share of the batch is augmented
    # Ink pushed off the frame: re-centring keeps the digit whole. Measure the ink in the
    # outer 1-pixel border, where a cut-off digit would touch.
    border = np.asarray(out[:, [0, -1], :, 0]).sum() + np.asarray(out[:, :, [0, -1], 0]).sum()
    assert border < 0.01 * float(jnp.sum(out))


def test_the_recipes_extreme_distortion_keeps_the_ink_inside_the_frame(digits):
    a = ROBUST
    extreme = params(
        64,
        rotation=a.rotation,
        scale=a.scale[1],
        slant=a.slant,
        shift=a.shift,
        thickness=a.thickness[1],
    )
    out = augment.distort(digits, extreme, recentre=True)
    border = np.asarray(out[:, [0, -1], :]).sum() + np.asarray(out[:, :, [0, -1]]).sum()
    assert border < 0.02 * float(jnp.sum(out))


def test_the_same_seed_and_step_give_the_same_distortions_and_another_step_others():
    rng = jax.random.PRNGKey(0)
    a, b = augment.step_key(rng, jnp.int32(5)), augment.step_key(rng, jnp.int32(5))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    pa = augment.sample_parameters(a, 8, ROBUST)
    pc = augment.sample_parameters(augment.step_key(rng, jnp.int32(6)), 8, ROBUST)
    assert not np.array_equal(np.asarray(pa["rotation"]), np.asarray(pc["rotation"]))
    assert float(jnp.max(jnp.abs(pa["rotation"]))) <= ROBUST.rotation


def test_only_the_rows_a_recipe_can_augment_are_distorted_and_the_share_holds(digits):
    aug = Augment(
        share=0.5, share_end=0.25, rotation=30, scale=(1, 1), slant=0, shift=0, thickness=(0, 0)
    )
    assert augment.augmented_rows(64, aug) == 32 and augment.augmented_rows(7, aug) == 4
    images = digits[..., None]
    run = jax.jit(lambda k, p: augment.augment_batch(k, images, aug, p))
    changed = {0.0: [], 1.0: []}
    for seed in range(40):
        for progress in changed:
            out = run(jax.random.PRNGKey(seed), progress)
            np.testing.assert_array_equal(np.asarray(out[32:]), np.asarray(images[32:]))
            changed[progress].append(np.asarray(jnp.any(out != images, axis=(1, 2, 3))).mean())
    # each image with probability share (0.5 at the start, 0.25 at the end): 2,560 draws each
    assert abs(np.mean(changed[0.0]) - 0.5) < 0.03 and abs(np.mean(changed[1.0]) - 0.25) < 0.03


def test_the_share_moves_from_start_to_end_with_progress(digits):
    aug = Augment(
        share=1.0, share_end=0.0, rotation=30, scale=(1, 1), slant=0, shift=0, thickness=(0, 0)
    )
    images = digits[..., None]
    start = augment.augment_batch(jax.random.PRNGKey(1), images, aug, 0.0)
    end = augment.augment_batch(jax.random.PRNGKey(1), images, aug, 1.0)
    assert bool(jnp.all(jnp.any(start != images, axis=(1, 2, 3))))
    np.testing.assert_array_equal(np.asarray(end), np.asarray(images))


def test_the_elastic_field_is_a_smooth_blend_of_its_knots():
    basis = np.asarray(augment.ELASTIC_BASIS)
    k = augment.ELASTIC_KNOTS
    assert basis.shape == (28 * 28, k * k)
    np.testing.assert_allclose(basis.sum(axis=1), 1.0, atol=1e-6)  # a blend: never amplifies
    assert basis.min() >= 0.0
    knots = jax.random.uniform(jax.random.PRNGKey(0), (3, k * k, 2), jnp.float32, -2.0, 2.0)
    field = np.asarray(augment.elastic_field(knots)).reshape(3, 28, 28, 2)
    corners = np.asarray(knots).reshape(3, k, k, 2)
    # the frame's corner pixels carry the corner knots' displacement exactly
    for (y, x), (i, j) in zip(
        ((0, 0), (0, 27), (27, 0), (27, 27)), ((0, 0), (0, -1), (-1, 0), (-1, -1)), strict=True
    ):
        np.testing.assert_allclose(field[:, y, x], corners[:, i, j], atol=1e-6)
    assert np.abs(field).max() <= 2.0 + 1e-6
    # smooth: neighbouring pixels move by at most the knots' spread over their spacing
    step = 4.0 * (k - 1) / 27
    assert np.abs(np.diff(field, axis=1)).max() <= step + 1e-5
    assert np.abs(np.diff(field, axis=2)).max() <= step + 1e-5


def test_a_zero_elastic_field_changes_nothing_and_a_drawn_one_bends_the_digit(digits):
    k2 = augment.ELASTIC_KNOTS**2
    plain = augment.distort(digits, params(64, rotation=10.0), recentre=True)
    zero = params(64, rotation=10.0) | {"elastic": jnp.zeros((64, k2, 2))}
    np.testing.assert_array_equal(np.asarray(augment.distort(digits, zero)), np.asarray(plain))
    bent = params(64, rotation=10.0) | {
        "elastic": jax.random.uniform(jax.random.PRNGKey(1), (64, k2, 2), jnp.float32, -2.0, 2.0)
    }
    out = np.asarray(augment.distort(digits, bent))
    assert np.mean(np.abs(out - np.asarray(plain))) > 0.02  # the strokes moved
    assert out.min() >= 0.0 and out.max() <= 1.0
    ink_ratio = out.sum(axis=(1, 2)) / np.asarray(plain).sum(axis=(1, 2))
    assert np.all(np.abs(ink_ratio - 1) < 0.35)  # bent, not torn apart or smeared out


def test_elastic_draws_on_its_own_key_so_the_other_parameters_stay_the_same():
    key = augment.step_key(jax.random.PRNGKey(0), jnp.int32(3))
    rigid = augment.sample_parameters(key, 16, dataclasses.replace(ROBUST, elastic=0.0))
    bent = augment.sample_parameters(key, 16, dataclasses.replace(ROBUST, elastic=1.5))
    assert "elastic" not in rigid and bent["elastic"].shape == (16, augment.ELASTIC_KNOTS**2, 2)
    assert float(jnp.max(jnp.abs(bent["elastic"]))) <= 1.5
    for name, value in rigid.items():
        np.testing.assert_array_equal(np.asarray(bent[name]), np.asarray(value))


def test_mild_distorts_the_rows_the_share_leaves_with_the_shape_changes_scaled(digits):
    aug = dataclasses.replace(ROBUST, share=0.7, share_end=0.3, mild=0.25)
    images = digits[..., None]
    rows = augment.augmented_rows(64, aug)
    key = jax.random.PRNGKey(4)
    out = np.asarray(augment.augment_batch(key, images, aug, 1.0))  # share 0.3 of 45 rows
    np.testing.assert_array_equal(out[rows:], np.asarray(images[rows:]))  # never candidates
    drawn = augment.sample_parameters(key, rows, aug)
    chosen = np.asarray(drawn["draw"] * rows < 0.3 * 64)
    assert 0 < chosen.sum() < rows
    full = np.asarray(augment.distort(digits[:rows], drawn))
    mild = augment.mild_parameters(drawn, jnp.full(rows, 0.25))
    for name in ("rotation", "slant", "thickness"):
        np.testing.assert_allclose(mild[name], 0.25 * drawn[name], rtol=1e-6)
    for name in ("scale", "shift", "draw"):  # placement jitter in full
        np.testing.assert_array_equal(np.asarray(mild[name]), np.asarray(drawn[name]))
    gentle = np.asarray(augment.distort(digits[:rows], mild))
    np.testing.assert_allclose(out[:rows][chosen, ..., 0], full[chosen], atol=1e-6)
    np.testing.assert_allclose(out[:rows][~chosen, ..., 0], gentle[~chosen], atol=1e-6)
    clean = np.asarray(digits[:rows])
    # the mild rows are changed, but less than the fully distorted ones
    gap = np.abs(gentle - clean).mean(axis=(1, 2)), np.abs(full - clean).mean(axis=(1, 2))
    assert np.all(gap[0][~chosen] > 0) and gap[0][~chosen].mean() < gap[1][~chosen].mean()
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_mild_scales_the_elastic_field_too():
    aug = dataclasses.replace(ROBUST, elastic=2.0)
    drawn = augment.sample_parameters(jax.random.PRNGKey(0), 8, aug)
    factor = jnp.asarray([1.0, 0.5] * 4)
    mild = augment.mild_parameters(drawn, factor)
    np.testing.assert_allclose(mild["elastic"], drawn["elastic"] * factor[:, None, None])


@pytest.mark.parametrize(
    "name, op, fill", [("grey_dilate", np.max, -np.inf), ("grey_erode", np.min, np.inf)]
)
def test_dilation_and_erosion_are_the_3x3_max_and_min_with_the_frame_edge_left_out(name, op, fill):
    images = np.asarray(jax.random.uniform(jax.random.PRNGKey(8), (3, 28, 28)))
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), constant_values=fill)
    windows = np.stack(
        [padded[:, dy : dy + 28, dx : dx + 28] for dy in range(3) for dx in range(3)]
    )
    expected = op(windows, axis=0)  # every pixel's whole 3x3 neighbourhood, in the frame
    np.testing.assert_array_equal(np.asarray(getattr(augment, name)(jnp.asarray(images))), expected)
