"""All mutable training state in one pytree, its optimizer and its fresh initialisation."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flaxdigits import models
from flaxdigits.training.config import TrainConfig


class TrainState(NamedTuple):
    """All mutable training state, one pytree: checkpoint, resume and export take this."""

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: optimizer steps taken
    rng: jax.Array  # uint32[2]: data-order key; epoch e shuffles with fold_in(rng, e)


def make_optimizer(config: TrainConfig, steps_per_epoch: int = 1) -> optax.GradientTransformation:
    """Adam (Keras' defaults) with the recipe's learning rate: constant, or warm-up + cosine.

    The schedule is laid over config.epochs * steps_per_epoch steps; the optimizer state has the
    same structure for any steps_per_epoch, so shapes-only callers may leave it at 1.
    """
    return optax.adam(learning_rate(config, steps_per_epoch), b1=0.9, b2=0.999, eps=1e-7)


def learning_rate(config: TrainConfig, steps_per_epoch: int = 1) -> float | optax.Schedule:
    """The recipe's learning rate as optax takes it: a float (constant) or a schedule of the
    optimizer step count (update k, counting from 0, uses schedule(k))."""
    recipe = config.recipe_values
    if recipe.schedule == "constant":
        return config.learning_rate
    warmup = max(1, round(recipe.warmup_epochs * steps_per_epoch))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(warmup + 1, config.epochs * steps_per_epoch),  # includes the warm-up
        end_value=config.learning_rate * recipe.end_fraction,
    )


def init_state(config: TrainConfig) -> tuple[nnx.GraphDef, TrainState]:
    """Fresh model parameters and optimizer state from config.seed."""
    model = models.create_model(config.model, config.seed, config.recipe_values.conv_pool)
    graphdef, params = nnx.split(model, nnx.Param)
    state = TrainState(
        params=params,
        opt_state=make_optimizer(config).init(params),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.fold_in(jax.random.PRNGKey(config.seed), 1),  # 0 is model init
    )
    return graphdef, state


def abstract_state(config: TrainConfig) -> tuple[nnx.GraphDef, TrainState]:
    """The graphdef and the shapes/dtypes of init_state(config), with nothing computed."""
    conv_pool = config.recipe_values.conv_pool
    model = nnx.eval_shape(lambda: models.create_model(config.model, conv_pool=conv_pool))
    graphdef, _ = nnx.split(model, nnx.Param)
    return graphdef, jax.eval_shape(lambda: init_state(config)[1])
