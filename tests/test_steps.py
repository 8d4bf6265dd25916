"""The compiled step loop: XLA:CPU's in-place option changes nothing but the copies."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from flaxdigits.data.mnist import MNIST
from flaxdigits.training import augment, mesh, steps
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.train import compile_step_loop, prepare


def test_cpu_step_loop_updates_the_kernel_in_place_with_the_same_numbers(mnist, monkeypatch):
    # CPU_COMPILER_OPTIONS lets XLA:CPU update the loop-carried parameters in place (no
    # per-step copy of the CNN's 5408x100 kernel) and must not change a single number.
    small = MNIST(
        *(a[:2000] for a in (mnist.train_images, mnist.train_labels)),
        mnist.test_images[:500],
        mnist.test_labels[:500],
        source="subset",
    )
    config = TrainConfig(model="cnn")
    setup = prepare(config, small, mesh.make_mesh(1))  # as train() builds its job
    replicated, split = setup.replicated, setup.split
    state = jax.device_put(setup.state, replicated)
    order = steps.epoch_order(state.rng, jnp.int32(0), int(split.train_images.shape[0]))

    def run(compiled):
        leaves = [jnp.copy(x) for x in jax.tree.leaves(state)]  # the call donates them
        sums = jax.device_put(jnp.zeros((2,), jnp.float32), replicated)
        n = jax.device_put(jnp.int32(20), replicated)
        leaves, sums = compiled(leaves, sums, n, order, split.train_images, split.train_labels)
        return [np.asarray(x) for x in [*leaves, sums]]

    tuned = compile_step_loop(setup, state)
    kernel_copy = re.compile(r"= f32\[5408,100\]\{[0-9,]*\} copy\(")
    assert not kernel_copy.search(tuned.as_text())
    monkeypatch.setattr(steps, "CPU_COMPILER_OPTIONS", {})
    plain = compile_step_loop(setup, state)
    assert kernel_copy.search(plain.as_text())  # the option is what removes the copy
    for a, b in zip(run(tuned), run(plain), strict=True):
        np.testing.assert_array_equal(a, b)


def test_epoch_order_is_a_permutation_that_depends_on_seed_and_epoch_only():
    rng = jax.random.PRNGKey(3)
    a = np.asarray(steps.epoch_order(rng, jnp.int32(1), 100))
    assert sorted(a.tolist()) == list(range(100))
    np.testing.assert_array_equal(a, np.asarray(steps.epoch_order(rng, jnp.int32(1), 100)))
    assert not np.array_equal(a, np.asarray(steps.epoch_order(rng, jnp.int32(2), 100)))


def test_dropout_keys_are_a_stream_of_their_own_per_step():
    rng = jax.random.PRNGKey(0)
    keys = [np.asarray(steps.dropout_key(rng, jnp.int32(s))) for s in (0, 1, 2)]
    assert len({k.tobytes() for k in keys}) == 3  # a new mask every step ...
    np.testing.assert_array_equal(keys[1], np.asarray(steps.dropout_key(rng, jnp.int32(1))))
    others = {np.asarray(augment.step_key(rng, jnp.int32(1))).tobytes()}
    others.add(np.asarray(jax.random.fold_in(rng, 1)).tobytes())  # epoch 1's order
    assert keys[1].tobytes() not in others  # ... apart from the augmentation's and the order's
