"""The fast conv+pool: values and gradients against the textbook ops, ties handled as documented."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxdigits import models
from flaxdigits.models import conv_pool
from flaxdigits.training.config import CONV_POOLS


def test_training_max_pool_equals_reduce_window_values_and_grads():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 26, 26, 32))  # no ties
    ours = conv_pool.max_pool_2x2(x)
    reference = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))
    g_ours = jax.grad(lambda v: jnp.sum(conv_pool.max_pool_2x2(v) ** 2))(x)
    g_ref = jax.grad(lambda v: jnp.sum(nnx.max_pool(v, (2, 2), strides=(2, 2)) ** 2))(x)
    np.testing.assert_allclose(np.asarray(g_ours), np.asarray(g_ref), rtol=1e-6)


def _reference_conv_pool(x, kernel):  # autodiff of the textbook ops: conv, reduce_window max
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _assert_close_at_float32_scale(ours, ref):
    # A kernel-gradient entry sums B*26*26 (5,408 for B=8) products; summed in another order,
    # float32 differs by a few ulps of the gradient's overall scale, not of each small entry.
    ours, ref = np.asarray(ours), np.asarray(ref)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=2e-6 * float(np.abs(ref).max()))


# The custom training kernels (conv_pool.KERNELS but the textbook one itself).
TRAINING_KERNELS = ["strided", "gather"]


def test_the_kernels_are_the_ones_recipes_name():
    assert tuple(conv_pool.KERNELS) == CONV_POOLS
    assert conv_pool.KERNELS["strided"] is conv_pool.conv_max_pool


@pytest.mark.parametrize("name", TRAINING_KERNELS)
def test_conv_max_pool_training_forward_and_gradients_equal_autodiff_of_the_reference(name):
    kernel = models.create_model("cnn", seed=2).conv.kernel[...]
    x = jax.random.uniform(jax.random.PRNGKey(4), (8, 28, 28, 1))  # continuous: no pooling ties
    g = jax.random.normal(jax.random.PRNGKey(5), (8, 13, 13, 32))
    out, vjp = jax.vjp(conv_pool.KERNELS[name], x, kernel)  # the forward training runs
    ref_out, ref_vjp = jax.vjp(_reference_conv_pool, x, kernel)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), rtol=1e-6, atol=1e-6)
    for ours, ref in zip(vjp(g), ref_vjp(g), strict=True):
        assert ours.shape == ref.shape
        _assert_close_at_float32_scale(ours, ref)


def _reference_kernel_grad_at_windows(x, kernel, g):
    """The kernel gradient of conv+pool with the pooling windows' winners taken from the fast
    path's own forward values (first maximum in row-major order), and the conv's filter gradient
    from lax's own autodiff. Which position wins a tie or near-tie depends on how the conv's sums
    were rounded, which depends on the CPU; given the same winners, both gradients must agree.
    In bfloat16 the filter gradient is lax's in float32 on the same bfloat16 values, rounded to
    bfloat16 once, as the fast path promises (float32 sums).
    """
    _, (_, _, first) = conv_pool._conv_max_pool_fwd(x, kernel)  # (B, 13, 13, C) winner
    b, c = x.shape[0], kernel.shape[-1]
    first = np.asarray(first).reshape(-1, c)  # (N, C), N = B*13*13: the winning position
    gconv = np.zeros((b, 26, 26, c), np.float32)
    gq = np.asarray(g, np.float32).reshape(-1, c)
    bb, ii, jj = np.unravel_index(np.arange(b * 13 * 13), (b, 13, 13))
    for q, (qi, qj) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        rows, chans = np.nonzero(first == q)
        gconv[bb[rows], 2 * ii[rows] + qi, 2 * jj[rows] + qj, chans] = gq[rows, chans]
    conv = functools.partial(conv_pool._conv_valid, x.astype(jnp.float32))
    dk = jax.vjp(conv, kernel.astype(jnp.float32))[1](jnp.asarray(gconv))[0]
    return dk.astype(kernel.dtype)


def _assert_close_in(dtype, ours, ref):
    """float32: a few ulps of the overall scale; bfloat16: float32 sums in another order, each
    rounded to bfloat16 once, so at most one bfloat16 step (2**-7 relative) apart."""
    assert ours.dtype == ref.dtype == dtype
    if dtype == jnp.float32:
        _assert_close_at_float32_scale(ours, ref)
        return
    ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
    np.testing.assert_allclose(ours, ref, rtol=2**-7, atol=2**-8 * float(np.abs(ref).max()))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv_max_pool_kernel_gradient_on_real_digits_with_ties(mnist, dtype):
    # Real digits: most windows are all-zero background, where all 4 positions tie exactly.
    kernel = models.create_model("cnn", seed=2).conv.kernel[...].astype(dtype)
    x = (jnp.asarray(mnist.test_images[:64], jnp.float32)[..., None] / 255.0).astype(dtype)
    g = jax.random.normal(jax.random.PRNGKey(6), (64, 13, 13, 32)).astype(dtype)
    dk = jax.vjp(lambda k: conv_pool.conv_max_pool(x, k), kernel)[1](g)[0]
    _assert_close_in(dtype, dk, _reference_kernel_grad_at_windows(x, kernel, g))


@pytest.mark.parametrize("name", TRAINING_KERNELS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv_max_pool_constructed_exact_ties_go_to_the_first_position_in_every_window(dtype, name):
    # Each 2x2 pooling window of the conv output holds one value four times (the input is
    # constant over 2x2 blocks shifted so a 1x1 kernel copies it): exact ties, on any CPU.
    blocks = jax.random.uniform(jax.random.PRNGKey(7), (2, 3, 3, 1)).astype(dtype)
    x = jnp.repeat(jnp.repeat(blocks, 2, axis=1), 2, axis=2)  # (2, 6, 6, 1)
    kernel = jnp.full((1, 1, 1, 3), 0.5, dtype)
    (dx,) = jax.grad(lambda v: jnp.sum(conv_pool.KERNELS[name](v, kernel)), argnums=(0,))(x)
    assert dx.dtype == dtype
    expected = np.zeros((2, 6, 6, 1), np.float32)
    expected[:, ::2, ::2, 0] = 1.5  # 3 output channels x 0.5, all at the window's first pixel
    np.testing.assert_array_equal(np.asarray(dx, np.float32), expected)  # exact in both
    ref = jax.grad(lambda v: jnp.sum(conv_pool.conv_max_pool_reference(v, kernel)))(x)
    assert float(jnp.sum(ref)) == pytest.approx(float(jnp.sum(dx)))  # same mass, one per window


@pytest.mark.parametrize("name", TRAINING_KERNELS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_conv_max_pool_tie_sends_the_gradient_to_the_first_maximum(dtype, name):
    # A 1x1 "identity" kernel on a constant image: every window ties; the row-major first wins.
    x = jnp.ones((1, 4, 4, 1), dtype)
    kernel = jnp.ones((1, 1, 1, 1), dtype)
    (dx,) = jax.grad(lambda v: jnp.sum(conv_pool.KERNELS[name](v, kernel)), argnums=(0,))(x)
    expected = np.zeros((1, 4, 4, 1))
    expected[0, ::2, ::2, 0] = 1.0
    assert dx.dtype == dtype
    np.testing.assert_array_equal(np.asarray(dx, np.float32), expected)


def _reference_in(dtype):
    """The textbook conv+pool as a mixed-precision conv is done: the dtype's values multiplied
    and summed in float32, the result rounded to the dtype once (what the fast path promises)."""

    def reference(x, kernel):
        y = _reference_conv_pool(x.astype(jnp.float32), kernel.astype(jnp.float32))
        return y.astype(dtype)

    return reference


@pytest.mark.parametrize("name", TRAINING_KERNELS)
def test_conv_max_pool_in_bfloat16_equals_the_textbook_ops_summed_in_float32(name):
    kernel = models.create_model("cnn", seed=2).conv.kernel[...].astype(jnp.bfloat16)
    x = jax.random.uniform(jax.random.PRNGKey(4), (8, 28, 28, 1)).astype(jnp.bfloat16)
    g = jax.random.normal(jax.random.PRNGKey(5), (8, 13, 13, 32)).astype(jnp.bfloat16)
    out, vjp = jax.vjp(conv_pool.KERNELS[name], x, kernel)
    ref_out, ref_vjp = jax.vjp(_reference_in(jnp.bfloat16), x, kernel)
    _assert_close_in(jnp.bfloat16, out, ref_out)
    for ours, ref in zip(vjp(g), ref_vjp(g), strict=True):
        _assert_close_in(jnp.bfloat16, ours, ref)
