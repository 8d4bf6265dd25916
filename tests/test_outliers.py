"""Non-digits drawn on the device (training/outliers.py), the outlier-exposure loss, the answer
rule (contract), calibration (evaluation/calibration.py) and the held-out non-digits."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flaxdigits import models
from flaxdigits.core import contract
from flaxdigits.evaluation import calibration, nondigits
from flaxdigits.training import config as C
from flaxdigits.training import outliers, steps
from flaxdigits.training.evaluate import loss_and_logits
from flaxdigits.training.state import TrainState
from flaxdigits.training.steps import LEFT_OUT, NOT_A_DIGIT, train_step


def digits(n: int = 16) -> jax.Array:
    """n simple strokes as digits (a vertical bar, a 1), (n, 28, 28, 1) float in [0, 1]."""
    x = np.zeros((n, 28, 28, 1), np.float32)
    x[:, 4:24, 13:15] = 1.0
    return jnp.asarray(x)


# ------------------------------------------------------------------- the non-digits themselves


def test_non_digits_are_images_placed_as_the_page_places_a_drawing():
    batch = jax.jit(outliers.outlier_batch)(jax.random.key(0), digits())
    x = np.asarray(batch)[..., 0]
    assert batch.shape == (16, 28, 28, 1) and np.isfinite(x).all()
    assert x.min() >= 0.0 and np.allclose(x.max((1, 2)), 1.0)  # the strongest pixel white
    for image in x:
        ys, xs = np.nonzero(image > 0.1)
        assert max(ys.max() - ys.min(), xs.max() - xs.min()) + 1 <= 21  # the 20-px box
        mass = (np.indices(image.shape) * image).sum((1, 2)) / image.sum()
        assert np.allclose(mass, 14.0, atol=1.0)  # centre of mass at (14, 14)


def test_the_same_key_draws_the_same_non_digits_and_another_key_others():
    draw = jax.jit(outliers.outlier_batch)  # as training runs it (op by op: ~9 s)
    a, b, c = (draw(jax.random.key(k), digits()) for k in (3, 3, 4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize(
    ("n", "counts"), [(16, (4, 4, 4, 4)), (8, (2, 2, 2, 2)), (6, (2, 2, 1, 1))]
)
def test_each_kind_gets_an_equal_share(n, counts):
    assert outliers.kind_counts(n) == counts and sum(counts) == n


def test_strokes_are_drawn_along_their_segments_and_only_valid_ones():
    seg = jnp.array([[[[14.0, 4.0], [14.0, 24.0]], [[4.0, 14.0], [24.0, 14.0]]]])  # (1, 2, 2, 2)
    one = outliers.render_strokes(seg, jnp.array([[True, False]]), jnp.array([1.0]))[0]
    assert float(one[14, 10]) == 1.0 and float(one[14, 24]) == 1.0  # on the valid stroke
    assert float(one[6, 14]) == 0.0 and float(one[22, 14]) == 0.0  # the invalid one: no ink
    assert float(one[17, 10]) == 0.0  # beyond the pen's half-width and its one-pixel edge
    dot = jnp.array([[[[14.0, 14.0], [14.0, 14.0]]]])  # a zero-length segment: no NaN
    assert np.isfinite(outliers.render_strokes(dot, jnp.array([[True]]), jnp.ones(1))).all()


def test_every_template_fits_the_segment_budget_and_leaves_digit_shapes_out():
    assert outliers.TEMPLATES.shape[1] == outliers.MAX_SEGMENTS
    assert not set(outliers.STROKE_TEMPLATES) & set("OISZBG0123456789")


# ------------------------------------------------------------------------------ the loss


@functools.cache
def four_digits_four_non_digits() -> jax.Array:
    """(8, 28, 28, 1): 4 strokes, then 4 non-digits drawn from them (compiled: op by op ~10 s)."""
    return jnp.concatenate(
        [digits(4), jax.jit(outliers.outlier_batch)(jax.random.key(0), digits(4))]
    )


def test_the_outlier_loss_pushes_non_digits_towards_the_flat_answer():
    model = models.create_model("mlp", seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    images = four_digits_four_non_digits()
    labels = jnp.array([1, 1, 1, 1, NOT_A_DIGIT, NOT_A_DIGIT, NOT_A_DIGIT, NOT_A_DIGIT])
    plain, _ = loss_and_logits(graphdef, params, images[:4], labels[:4])
    same, _ = loss_and_logits(graphdef, params, images[:4], labels[:4], outlier_weight=0.5)
    assert np.isclose(plain, same)  # digits only: the plain cross-entropy
    loss, logits = loss_and_logits(graphdef, params, images, labels, outlier_weight=0.5)
    flat = -jnp.mean(jax.nn.log_softmax(logits[4:], -1))
    assert np.isclose(loss, plain + 0.5 * flat, rtol=1e-5)
    # A model whose answer on the non-digits is flat has none of their loss left.
    uniform = jnp.zeros((4, 10))
    assert np.isclose(-jnp.mean(jax.nn.log_softmax(uniform, -1)), np.log(10))


def test_a_training_step_with_non_digits_counts_only_the_digits_accuracy():
    model = models.create_model("mlp", seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(1e-3)
    state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), jax.random.key(0))
    images = jnp.concatenate([digits(4), jnp.zeros((4, 28, 28, 1))])
    answer = int(jnp.argmax(model(images[:1])[0]))
    labels = jnp.array([answer] * 4 + [NOT_A_DIGIT] * 4)
    _, (loss, accuracy) = train_step(graphdef, tx, state, (images, labels), outlier_weight=0.5)
    assert float(accuracy) == 1.0 and np.isfinite(float(loss))  # 4 of 4 digits, not 4 of 8


def test_non_digits_left_out_count_in_neither_the_loss_nor_the_accuracy():
    model = models.create_model("mlp", seed=0)
    graphdef, params = nnx.split(model, nnx.Param)
    images = four_digits_four_non_digits()
    labels = jnp.array([1] * 4 + [LEFT_OUT] * 4)
    plain, _ = loss_and_logits(graphdef, params, images[:4], labels[:4])
    left_out, _ = loss_and_logits(graphdef, params, images, labels, outlier_weight=0.5)
    assert np.isclose(plain, left_out)
    counted, _ = loss_and_logits(
        graphdef, params, images, jnp.where(labels < 0, -1, labels), outlier_weight=0.5
    )
    assert counted > left_out + 1e-3  # the same rows, counted
    tx = optax.adam(1e-3)
    state = TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), jax.random.key(0))
    answer = int(jnp.argmax(model(images[:1])[0]))
    batch = (images, jnp.array([answer] * 4 + [LEFT_OUT] * 4))
    step = jax.jit(functools.partial(train_step, graphdef, tx, outlier_weight=0.5))
    _, (_, accuracy) = step(state, batch)
    assert float(accuracy) == 1.0


def test_non_digits_count_from_the_recipes_start_on(mnist):
    recipe = C.RECIPES["robust"]["mlp"]
    spec = steps.StepSpec(
        graphdef=None,
        tx=None,
        steps_per_epoch=10,
        batch_size=16,
        batch_sharding=None,
        augment=recipe.augment,
        total_steps=100,
        outliers=C.Outliers(0.25, start=0.5),
    )
    images = jnp.asarray(mnist.test_images[:160])
    labels = jnp.asarray(mnist.test_labels[:160], jnp.int32)  # as split_mnist gives them
    order = jnp.arange(160)

    @jax.jit
    def targets(step):  # compiled once: op by op, three groups took ~20 s
        state = TrainState(None, None, step, jax.random.key(0))
        return steps.augmented_batches(spec, state, order, images, labels)[1]

    def marks(step: int) -> np.ndarray:
        return np.asarray(targets(jnp.int32(step))[:, 16:])  # (the group's steps, 4 non-digits)

    np.testing.assert_array_equal(marks(0), LEFT_OUT)
    # steps 48, 49, 50, 51: the last two are at half of training
    np.testing.assert_array_equal(marks(48)[:, 0], [LEFT_OUT, LEFT_OUT, NOT_A_DIGIT, NOT_A_DIGIT])
    np.testing.assert_array_equal(marks(96), NOT_A_DIGIT)
    with pytest.raises(ValueError, match="start"):
        C.Outliers(0.1, start=1.0)


def test_outliers_are_a_recipe_value_checked_and_need_augmentation():
    assert C.Outliers(0.125).rows(128) == 16 and C.Outliers(0.125).rows(64) == 8
    with pytest.raises(ValueError, match="share"):
        C.Outliers(0.0)
    with pytest.raises(ValueError, match="weight"):
        C.Outliers(0.1, weight=0.0)
    with pytest.raises(ValueError, match="augmentation"):
        dataclasses.replace(C.RECIPES["original"]["mlp"], outliers=C.Outliers(0.1))


# ------------------------------------------------------------------------ the answer rule

RULE = {
    "temperature": 1.5,
    "not_a_digit_below": 0.5,
    "not_sure_below": 0.8,
    "validation_rejected": 0.005,
}


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [(0.49, "not a digit"), (0.5, "not sure"), (0.79, "not sure"), (0.8, "digit"), (1.0, "digit")],
)
def test_the_answer_rule_reads_the_confidence(confidence, expected):
    assert contract.answer(confidence, RULE) == expected
    assert contract.answer(confidence, None) == "digit"  # a file from before the rule


@pytest.mark.parametrize("rule", [RULE, None, {}])
def test_many_confidences_get_the_answers_one_at_a_time_gives(rule):
    edges = [0.0, 0.5, 0.8, 1.0, np.nextafter(0.5, 0), np.nextafter(0.8, 1), 0.4999999]
    confidences = np.concatenate([np.linspace(0, 1, 1001), edges, np.float32([0.5, 0.8])])
    expected = [contract.answer(float(c), rule) for c in confidences]
    assert list(contract.answers(confidences, rule)) == expected


@pytest.mark.parametrize(
    "bad",
    [
        {**RULE, "not_a_digit_below": 0.9},  # above not_sure_below
        {**RULE, "temperature": 0.0},
        {**RULE, "validation_rejected": 1.5},
        {**RULE, "not_sure_below": float("nan")},
        {**RULE, "not_sure_below": True},
        {**RULE, "extra": 1},
        {k: v for k, v in RULE.items() if k != "temperature"},
        [0.5, 0.8],
    ],
)
def test_a_bad_answer_rule_is_refused(bad):
    with pytest.raises(ValueError):
        contract.check_answer_rule(bad)


# ---------------------------------------------------------------------------- calibration


def test_temperature_scaling_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 10))
    true_t = 2.0  # labels drawn from softmax(logits / 2): the logits are overconfident
    p = calibration.softmax(logits, true_t)
    labels = np.array([rng.choice(10, p=row) for row in p])
    t = calibration.fit_temperature(logits, labels)
    assert abs(t - true_t) < 0.1
    before = calibration.reliability(calibration.softmax(logits), labels)["ece"]
    after = calibration.reliability(calibration.softmax(logits, t), labels)["ece"]
    assert after < 0.02 < before


def test_auroc_counts_pairs_and_halves_ties():
    assert calibration.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert calibration.auroc(np.array([0.0]), np.array([1.0])) == 0.0
    assert calibration.auroc(np.array([1.0, 3.0]), np.array([1.0, 2.0])) == 0.625  # (0.5+0+1+1)/4


def test_the_threshold_rejects_the_asked_share():
    confidence = np.linspace(0, 1, 1001)
    low = calibration.threshold_for(confidence, 0.01)
    assert np.isclose(np.mean(confidence < low), 0.01, atol=0.001)


def test_held_out_non_digits_are_preprocessed_drawings_of_kinds_training_never_drew():
    images, kinds, names = nondigits.heldout_inputs(per_doodle=2)
    assert images.shape[1:] == (28, 28) and len(images) == len(kinds) == len(names)
    assert set(kinds) == {"letter", "symbol", "doodle"}
    assert not set(names) & nondigits.LOOKS_LIKE_A_DIGIT
    # Letters and symbols here are typed in fonts, training's are strokes; the doodles are
    # shapes training has no template of.
    assert not set(nondigits.DOODLES) & set(outliers.STROKE_TEMPLATES)
