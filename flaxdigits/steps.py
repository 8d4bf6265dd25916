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

from flaxdigits import augment, contract
from flaxdigits.config import Augment
from flaxdigits.evaluation import loss_and_logits
from flaxdigits.state import TrainState

# Training steps per jitted call (a fori_loop on the device); the host syncs once per call to
# update the progress bar. Results do not depend on it.
STEPS_PER_CALL = 200
# XLA:CPU compile options for the step loop. Without region analysis, copy insertion copies
# every loop-carried array at the top of the fori_loop body (the CNN's 5408x100 kernel: 2.2 MB
# per step) instead of updating it in place. Same numbers bit for bit (tests/test_steps.py).
CPU_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


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


def train_step(
    graphdef: nnx.GraphDef, tx: optax.GradientTransformation, state: TrainState, batch
) -> tuple[TrainState, jax.Array]:
    """One Adam step on batch = (float images (B,28,28,1), labels (B,)) -> (state, [loss, acc])."""
    images, labels = batch
    grad_fn = jax.value_and_grad(functools.partial(loss_and_logits, graphdef), has_aux=True)
    (loss, logits), grads = grad_fn(state.params, images, labels)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    new_state = state._replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new_state, jnp.stack([loss, accuracy])


def epoch_order(rng: jax.Array, epoch: jax.Array, n_train: int) -> jax.Array:
    """The permutation of training indices for one epoch: a function of (seed, epoch) only."""
    return jax.random.permutation(jax.random.fold_in(rng, epoch), n_train)


def indexed_train_step(spec: StepSpec, state: TrainState, sums, order, images, labels):
    """train_step on the batch the step counter points at in this epoch's order (all on device).

    sums (2,) accumulates [loss, accuracy] over the epoch inside the same jit region. The batch
    is constrained to spec.batch_sharding: data parallelism.
    """
    start = (state.step % spec.steps_per_epoch) * spec.batch_size
    idx = jax.lax.dynamic_slice_in_dim(order, start, spec.batch_size)  # (B,)
    batch = (contract.to_model_input(images[idx], jnp), labels[idx])
    batch = jax.lax.with_sharding_constraint(batch, spec.batch_sharding)
    if spec.augment is not None:  # (seed, step) -> the same distortions on a resumed run
        key = augment.step_key(state.rng, state.step)
        progress = state.step.astype(jnp.float32) / spec.total_steps
        distorted = augment.augment_batch(key, batch[0], spec.augment, progress)
        batch = jax.lax.with_sharding_constraint((distorted, batch[1]), spec.batch_sharding)
    state, metrics = train_step(spec.graphdef, spec.tx, state, batch)
    return state, sums + metrics


def train_steps(spec: StepSpec, treedef, leaves: list[jax.Array], sums, n, order, images, labels):
    """n (an int32 device scalar) indexed_train_steps in one call, as a lax.fori_loop.

    The TrainState crosses the call boundary as its flat list of leaves (treedef rebuilds it):
    one dispatch per STEPS_PER_CALL steps, and no per-step Python pytree work, which on a 2-core
    CPU competes with XLA's threads for the cores.
    """
    state = jax.tree.unflatten(treedef, leaves)
    state, sums = jax.lax.fori_loop(
        0,
        n,
        lambda _, carry: indexed_train_step(spec, *carry, order, images, labels),
        (state, sums),
    )
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
