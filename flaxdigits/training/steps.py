"""The training step and the device loop around it: pure functions, jitted where they are used.

The dataset lives on the device; each epoch's order is a permutation drawn on the device from
fold_in(seed, epoch) and each step gathers its batch by index there, so a step moves nothing
between host and device, and a resumed run replays exactly the same batches.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flaxdigits import models
from flaxdigits.core import contract
from flaxdigits.training import augment, outliers
from flaxdigits.training.config import Augment, Outliers
from flaxdigits.training.evaluate import loss_and_logits
from flaxdigits.training.state import TrainState

# Training steps per jitted call (a fori_loop on the device); the host syncs once per call to
# update the progress bar. Results do not depend on it.
STEPS_PER_CALL = 200
# XLA:CPU compile options for the step loop. Without region analysis, copy insertion copies
# every loop-carried array at the top of the fori_loop body (the CNN's 5408x100 kernel: 2.2 MB
# per step) instead of updating it in place. Same numbers bit for bit (tests/test_steps.py).
CPU_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}
# Steps whose batches are augmented together (see augmented_batches). Each step's distortion is
# drawn from (seed, step) whatever the group; memory grows with it: a group holds
# AUGMENT_GROUP * batch_size distorted images and their sampling coordinates. On a 2-core CPU
# (AMD EPYC Zen 4) a group of 2-5 batches of 128 costs ~2.7 ms a batch, one batch alone ~5 ms
# (fixed costs of many small operations) and 25 batches ~4 ms (the coordinates, 25 MB, leave
# the cache): 4 also divides STEPS_PER_CALL.
AUGMENT_GROUP = 4
DROPOUT_STREAM = 0x44524F50  # "DROP": fold_in constant of the dropout keys' stream
NOT_A_DIGIT = -1  # the label of a non-digit row (recipes with outliers)
LEFT_OUT = -2  # the label of a non-digit row drawn before Outliers.start: no loss, no accuracy


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """What a step needs besides its arguments: fixed for a whole training job."""

    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    steps_per_epoch: int
    batch_size: int
    batch_sharding: jax.sharding.Sharding  # the batch axis split over the mesh
    augment: Augment | None = None  # the recipe's on-device augmentation, if any
    total_steps: int = 1  # of the whole run: how far training is, for the augmentation share
    dropout: float = 0.0  # the recipe's dropout rate (training only)
    precision: str = "float32"  # the step's compute dtype (config.PRECISIONS)
    outliers: Outliers | None = None  # non-digits added to each augmented batch, if any


def train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    state: TrainState,
    batch,
    dropout: float = 0.0,
    precision: str = "float32",
    outlier_weight: float = 0.0,
) -> tuple[TrainState, jax.Array]:
    """One Adam step on batch = (float images (B,28,28,1), labels (B,)) -> (state, [loss, acc]).

    With a dropout rate, its mask is drawn from dropout_key(rng, step): a resumed run replays it.
    The forward and backward passes run in `precision` (bfloat16: mixed precision); the
    parameters, gradients, optimizer state, loss and accuracy stay float32. With an
    outlier_weight, rows labelled NOT_A_DIGIT are non-digits (evaluate.loss_and_logits); the
    accuracy is the digits'.
    """
    images, labels = batch
    loss_fn = functools.partial(loss_and_logits, graphdef, outlier_weight=outlier_weight)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    drop = models.Dropout(dropout_key(state.rng, state.step), dropout) if dropout else None
    compute_dtype = jnp.dtype(precision)
    (loss, logits), grads = grad_fn(state.params, images, labels, drop, compute_dtype)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    hits = jnp.argmax(logits, -1) == labels
    if outlier_weight:
        digits = labels >= 0
        accuracy = jnp.sum(hits & digits) / jnp.maximum(jnp.sum(digits), 1)
    else:
        accuracy = jnp.mean(hits)
    new_state = state._replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new_state, jnp.stack([loss, accuracy])


def dropout_key(rng: jax.Array, step: jax.Array) -> jax.Array:
    """Step `step`'s dropout key: its own stream of the run's key, apart from the data order's
    (fold_in(rng, epoch)) and the augmentation's (augment.step_key)."""
    return jax.random.fold_in(jax.random.fold_in(rng, DROPOUT_STREAM), step)


def epoch_order(rng: jax.Array, epoch: jax.Array, n_train: int) -> jax.Array:
    """The permutation of training indices for one epoch: a function of (seed, epoch) only."""
    return jax.random.permutation(jax.random.fold_in(rng, epoch), n_train)


def indexed_train_step(spec: StepSpec, state: TrainState, sums, order, images, labels):
    """train_step on the batch the step counter points at in this epoch's order (all on device).

    sums (2,) accumulates [loss, accuracy] over the epoch inside the same jit region. The batch
    is constrained to spec.batch_sharding: data parallelism. So are its indices, so that each
    device (of any process) gathers only its own rows from its copy of the images.
    """
    start = (state.step % spec.steps_per_epoch) * spec.batch_size
    idx = jax.lax.dynamic_slice_in_dim(order, start, spec.batch_size)  # (B,)
    idx = jax.lax.with_sharding_constraint(idx, spec.batch_sharding)
    batch = (contract.to_model_input(images[idx], jnp), labels[idx])
    return _step(spec, state, sums, batch)


def _step(spec: StepSpec, state: TrainState, sums, batch):
    batch = jax.lax.with_sharding_constraint(batch, spec.batch_sharding)
    weight = spec.outliers.weight if spec.outliers else 0.0
    state, metrics = train_step(
        spec.graphdef, spec.tx, state, batch, spec.dropout, spec.precision, weight
    )
    return state, sums + metrics


def augmented_batches(spec: StepSpec, state: TrainState, order, images, labels):
    """The next AUGMENT_GROUP steps' batches, augmented: ((G, B, 28, 28, 1), (G, B)).

    Step s's batch is augment_batch(step_key(rng, s), its images, progress s / total): a
    function of (seed, step) only, whichever group it falls in. Distorting a group of batches
    in one vectorised pass instead of one batch per step costs a fraction of the step on CPU,
    where each of the distortion's many small operations has a fixed cost.
    """
    steps = state.step + jnp.arange(AUGMENT_GROUP, dtype=state.step.dtype)  # (G,)
    starts = (steps % spec.steps_per_epoch) * spec.batch_size
    idx = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(order, s, spec.batch_size))(starts)
    clean = contract.to_model_input(images[idx], jnp)  # (G, B, 28, 28, 1)
    keys = jax.vmap(augment.step_key, in_axes=(None, 0))(state.rng, steps)
    progress = steps.astype(jnp.float32) / spec.total_steps

    def one(key, batch, done):
        return augment.augment_batch(key, batch, spec.augment, done)

    distorted, targets = jax.vmap(one)(keys, clean, progress), labels[idx]
    if spec.outliers is None:
        return distorted, targets
    # Non-digits from the step's own key (outliers.OUTLIER_STREAM apart), some made of its
    # clean digits, after the batch's digits.
    rows = spec.outliers.rows(spec.batch_size)
    make = functools.partial(outliers.outlier_batch, kinds=spec.outliers.kinds)
    extra = jax.vmap(make)(keys, clean[:, :rows])
    counted = jnp.where(progress >= spec.outliers.start, NOT_A_DIGIT, LEFT_OUT)  # (G,)
    marks = jnp.broadcast_to(counted[:, None], (AUGMENT_GROUP, rows)).astype(targets.dtype)
    return (
        jnp.concatenate([distorted, extra], axis=1),
        jnp.concatenate([targets, marks], axis=1),
    )


def train_steps(spec: StepSpec, treedef, leaves: list[jax.Array], sums, n, order, images, labels):
    """n (an int32 device scalar) indexed_train_steps in one call, as a lax.fori_loop.

    The TrainState crosses the call boundary as its flat list of leaves (treedef rebuilds it):
    one dispatch per STEPS_PER_CALL steps, and no per-step Python pytree work, which on a 2-core
    CPU competes with XLA's threads for the cores. With augmentation the loop runs over groups
    of AUGMENT_GROUP steps, each group's batches distorted together first.
    """
    state = jax.tree.unflatten(treedef, leaves)
    if spec.augment is None:
        state, sums = jax.lax.fori_loop(
            0,
            n,
            lambda _, carry: indexed_train_step(spec, *carry, order, images, labels),
            (state, sums),
        )
        return jax.tree.leaves(state), sums

    def group(g, carry):
        state, sums = carry
        distorted, targets = augmented_batches(spec, state, order, images, labels)
        count = jnp.minimum(AUGMENT_GROUP, n - g * AUGMENT_GROUP)
        return jax.lax.fori_loop(
            0, count, lambda i, c: _step(spec, *c, (distorted[i], targets[i])), (state, sums)
        )

    groups = (n + AUGMENT_GROUP - 1) // AUGMENT_GROUP
    state, sums = jax.lax.fori_loop(0, groups, group, (state, sums))
    return jax.tree.leaves(state), sums


def compile_train_steps(spec: StepSpec, state: TrainState, example_args, cpu: bool):
    """train_steps compiled for state's leaves (donates leaves and sums).

    example_args = (sums, n, order, train_images, train_labels), placed as they will be at run
    time. Call the result as (leaves, sums, n, order, train_images, train_labels) ->
    (leaves, sums). On CPU it is compiled with CPU_COMPILER_OPTIONS.
    """
    leaves, treedef = jax.tree.flatten(state)
    fn = jax.jit(functools.partial(train_steps, spec, treedef), donate_argnums=(0, 1))
    return fn.lower(leaves, *example_args).compile(
        compiler_options=CPU_COMPILER_OPTIONS if cpu else None
    )
