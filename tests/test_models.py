"""Model structure pinned: parameter counts, layer shapes, output shape, pooling equivalence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxdigits import models


@pytest.mark.parametrize(("name", "count"), [("mlp", 101_770), ("cnn", 542_230)])
def test_parameter_count_is_exact(name, count):
    assert models.count_params(models.create_model(name)) == count


def test_layer_shapes_are_pinned():
    cnn = models.create_model("cnn")
    assert cnn.conv.kernel.shape == (3, 3, 1, 32)
    assert cnn.conv_bias.shape == (32,) and cnn.conv.bias is None
    assert cnn.hidden.kernel.shape == (5408, 100)
    assert cnn.out.kernel.shape == (100, 10)
    mlp = models.create_model("mlp")
    assert mlp.hidden.kernel.shape == (784, 128)
    assert mlp.out.kernel.shape == (128, 10)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_forward_gives_float32_logits_per_image(name):
    model = models.create_model(name)
    x = jnp.zeros((3, 28, 28, 1), jnp.float32)
    y = model(x)
    assert y.shape == (3, 10) and y.dtype == jnp.float32
    probs = models.predict_proba(model, x)
    np.testing.assert_allclose(np.asarray(probs.sum(-1)), 1.0, rtol=1e-6)


def test_same_seed_same_init_other_seed_differs():
    a = nnx.state(models.create_model("cnn", seed=0), nnx.Param)
    b = nnx.state(models.create_model("cnn", seed=0), nnx.Param)
    c = nnx.state(models.create_model("cnn", seed=1), nnx.Param)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(jax.tree.leaves(a)[-1], jax.tree.leaves(c)[-1])


def test_training_max_pool_equals_reduce_window_values_and_grads():
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 26, 26, 32))  # no ties
    ours = models.max_pool_2x2(x)
    reference = nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(reference))
    g_ours = jax.grad(lambda v: jnp.sum(models.max_pool_2x2(v) ** 2))(x)
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


def test_conv_max_pool_training_forward_and_gradients_equal_autodiff_of_the_reference():
    kernel = models.create_model("cnn", seed=2).conv.kernel[...]
    x = jax.random.uniform(jax.random.PRNGKey(4), (8, 28, 28, 1))  # continuous: no pooling ties
    g = jax.random.normal(jax.random.PRNGKey(5), (8, 13, 13, 32))
    out, vjp = jax.vjp(models.conv_max_pool, x, kernel)  # the forward training runs
    ref_out, ref_vjp = jax.vjp(_reference_conv_pool, x, kernel)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), rtol=1e-6, atol=1e-6)
    for ours, ref in zip(vjp(g), ref_vjp(g), strict=True):
        assert ours.shape == ref.shape
        _assert_close_at_float32_scale(ours, ref)


def test_conv_max_pool_kernel_gradient_on_real_digits_with_ties(mnist):
    # Real digits: most windows are all-zero background, where all 4 positions tie.
    kernel = models.create_model("cnn", seed=2).conv.kernel[...]
    x = jnp.asarray(mnist.test_images[:64], jnp.float32)[..., None] / 255.0
    g = jax.random.normal(jax.random.PRNGKey(6), (64, 13, 13, 32))
    dk = jax.vjp(lambda k: models.conv_max_pool(x, k), kernel)[1](g)[0]
    ref = jax.vjp(lambda k: _reference_conv_pool(x, k), kernel)[1](g)[0]
    _assert_close_at_float32_scale(dk, ref)


def test_conv_max_pool_tie_sends_the_gradient_to_the_first_maximum():
    # A 1x1 "identity" kernel on a constant image: every window ties; the row-major first wins.
    x = jnp.ones((1, 4, 4, 1))
    kernel = jnp.ones((1, 1, 1, 1))
    (dx,) = jax.grad(lambda v: jnp.sum(models.conv_max_pool(v, kernel)), argnums=(0,))(x)
    expected = np.zeros((1, 4, 4, 1))
    expected[0, ::2, ::2, 0] = 1.0
    np.testing.assert_array_equal(np.asarray(dx), expected)


def test_flops_per_image_counts_the_dominant_products():
    assert models.flops_per_image("mlp") > 2 * 784 * 128
    assert models.flops_per_image("cnn") > 2 * 5408 * 100 + 2 * 26 * 26 * 32 * 9


def test_train_flops_count_forward_and_the_needed_backward_products():
    # CNN: forward + conv kernel gradient + both dense layers' weight and input gradients.
    assert models.train_flops_per_image("cnn") == models.flops_per_image("cnn") + 2 * (
        26 * 26 * 32 * 9
    ) + 4 * (5408 * 100 + 100 * 10)
    # MLP: no gradient with respect to the image, so less than 3x the forward pass.
    assert 2 * models.flops_per_image("mlp") < models.train_flops_per_image("mlp")
    assert models.train_flops_per_image("mlp") < 3 * models.flops_per_image("mlp")


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.create_model("resnet")


def test_cnn_forward_equals_reference_forward_with_reduce_window_pooling():
    cnn = models.create_model("cnn", seed=3)
    x = jax.random.uniform(jax.random.PRNGKey(1), (16, 28, 28, 1))

    def reference(x):  # the textbook lowering: conv, relu, reduce_window max-pool, dense layers
        h = jax.lax.conv_general_dilated(
            x, cnn.conv.kernel[...], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h + cnn.conv_bias[...].reshape(1, 1, 1, -1))
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = jax.nn.relu(h.reshape(16, -1) @ cnn.hidden.kernel[...] + cnn.hidden.bias[None])
        return h @ cnn.out.kernel[...] + cnn.out.bias[None]

    np.testing.assert_allclose(np.asarray(cnn(x)), np.asarray(reference(x)), rtol=1e-5, atol=1e-5)
