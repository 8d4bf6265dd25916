"""Model structure pinned: parameter counts, layer shapes, output shape, pooling equivalence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend.core import jaxprs_in_params

from flaxdigits import models
from flaxdigits.core import contract
from flaxdigits.models import create_model
from flaxdigits.models.layers import Dropout, drop, keep_mask


@pytest.mark.parametrize(("name", "count"), [("mlp", 101_770), ("cnn", 542_230)])
def test_parameter_count_is_exact(name, count):
    assert models.count_params(models.create_model(name)) == count


def test_layer_shapes_are_pinned():
    cnn = models.create_model("cnn")
    assert cnn.conv.kernel.shape == (3, 3, 1, 32)
    assert cnn.conv.bias.shape == (32,)  # a plain nnx.Conv's layout: kernel and bias in the layer
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


def test_flops_per_image_are_the_readme_figures():
    # Multiply-add = 2, each bias add, ReLU and pooling comparison = 1 (the textbook layer order:
    # bias and ReLU on the whole 26x26x32 conv output, 3 comparisons per 2x2 window).
    mlp = 2 * 784 * 128 + 128 + 128 + 2 * 128 * 10 + 10
    conv = 2 * 26 * 26 * 32 * 9 + 26 * 26 * 32 * 2 + 13 * 13 * 32 * 3
    cnn = conv + 2 * 5408 * 100 + 100 + 100 + 2 * 100 * 10 + 10
    assert (mlp, cnn) == (203_530, 1_532_674)  # docs/training.md, "Two models, two recipes"
    assert models.flops_per_image("mlp") == mlp
    assert models.flops_per_image("cnn") == cnn


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

    def reference(x):  # the textbook stack: nnx.Conv's own call (bias inside), relu, pool, dense
        h = jax.nn.relu(cnn.conv(x))
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = jax.nn.relu(h.reshape(16, -1) @ cnn.hidden.kernel[...] + cnn.hidden.bias[None])
        return h @ cnn.out.kernel[...] + cnn.out.bias[None]

    np.testing.assert_allclose(np.asarray(cnn(x)), np.asarray(reference(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["strided", "gather"])
def test_fast_and_textbook_cnn_compute_the_same_function_and_gradients(kernel):
    fast = models.create_model("cnn", seed=4, conv_pool=kernel)
    assert fast.conv_pool == kernel
    textbook = models.CNN(rngs=nnx.Rngs(params=4), conv_pool="reference")
    x = jax.random.uniform(jax.random.PRNGKey(2), (8, 28, 28, 1))  # continuous: no pooling ties
    np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(textbook(x)), rtol=1e-5, atol=1e-5)

    def grads(model):
        graphdef, params = nnx.split(model, nnx.Param)
        return jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x) ** 2))(params)

    for a, b in zip(jax.tree.leaves(grads(fast)), jax.tree.leaves(grads(textbook)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_model_names_are_the_contracts():
    assert tuple(models.MODELS) == contract.MODEL_NAMES


def test_dropout_zeroes_its_share_and_keeps_the_expected_value():
    x = jnp.ones((64, 5408))
    assert drop(x, None) is x and drop(x, Dropout(jax.random.PRNGKey(0), 0.0)) is x
    out = np.asarray(drop(x, Dropout(jax.random.PRNGKey(0), 0.25)))
    zeroed = out == 0.0
    assert abs(zeroed.mean() - 0.25) < 0.01  # 346,112 draws
    np.testing.assert_allclose(out[~zeroed], 1.0 / 0.75, rtol=1e-6)  # the rest scaled up
    assert abs(out.mean() - 1.0) < 0.02
    assert zeroed.any(axis=0).all() and not zeroed.all(axis=0).any()  # per image, not per column
    again = np.asarray(drop(x, Dropout(jax.random.PRNGKey(0), 0.25)))
    other = np.asarray(drop(x, Dropout(jax.random.PRNGKey(1), 0.25)))
    np.testing.assert_array_equal(out, again)
    assert (other != out).any()


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_dropout_changes_the_training_forward_only(name):
    model = create_model(name, seed=0)
    x = jax.random.uniform(jax.random.PRNGKey(2), (8, 28, 28, 1))
    plain = np.asarray(model(x))
    np.testing.assert_array_equal(np.asarray(model(x, None)), plain)
    dropped = np.asarray(model(x, Dropout(jax.random.PRNGKey(3), 0.5)))
    assert dropped.shape == plain.shape and np.abs(dropped - plain).max() > 1e-3


def _dot_operand_dtypes(jaxpr) -> list[tuple[str, ...]]:
    """The operand dtypes of every dot_general in a jaxpr, nested calls (custom_vjp) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(tuple(str(v.aval.dtype) for v in eqn.invars))
        for sub in jaxprs_in_params(eqn.params):
            found += _dot_operand_dtypes(sub)
    return found


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_bfloat16_runs_every_product_in_bfloat16_with_float32_sums_and_logits(name):
    from flaxdigits.training.evaluate import loss_and_logits

    graphdef, params = nnx.split(create_model(name, seed=0), nnx.Param)
    images, labels = jnp.zeros((4, 28, 28, 1)), jnp.zeros((4,), jnp.int32)

    def loss(p, dtype):
        return loss_and_logits(graphdef, p, images, labels, compute_dtype=dtype)[0]

    grad_bf16 = jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, jnp.bfloat16)
    dots = _dot_operand_dtypes(grad_bf16.jaxpr)
    # forward and backward: 2 Dense layers x 3 products, the conv's 2 (its input gradient is
    # not traced as asked for: the images are not differentiated)
    assert len(dots) >= (6 if name == "mlp" else 8)
    assert all(d == ("bfloat16", "bfloat16") for d in dots), dots
    grads = jax.grad(loss)(params, jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
    logits = loss_and_logits(graphdef, params, images, labels, compute_dtype=jnp.bfloat16)[1]
    assert logits.dtype == jnp.float32
    f32_dots = _dot_operand_dtypes(
        jax.make_jaxpr(jax.grad(loss), static_argnums=1)(params, None).jaxpr
    )
    assert f32_dots and all(d == ("float32", "float32") for d in f32_dots)


@pytest.mark.parametrize("rate", [0.5, 0.25, 0.125, 0.75, 2**-16, 0.3])
def test_keep_mask_drops_each_entry_with_the_rate_independently(rate):
    shape = (64, 5408)  # 346,112 entries
    mask = np.asarray(keep_mask(jax.random.PRNGKey(0), rate, shape))
    assert mask.shape == shape and mask.dtype == bool
    sd = (rate * (1 - rate) / mask.size) ** 0.5
    assert abs((~mask).mean() - rate) < 5 * sd + 1e-6
    # Neighbouring entries (bits of one random word) are independent: pairs drop together at
    # rate**2, not more (copied bits) or less.
    flat = ~mask.reshape(-1)
    both = (flat[:-1] & flat[1:]).mean()
    assert abs(both - rate**2) < 5 * (rate**2 * (1 - rate**2) / flat.size) ** 0.5 + 1e-6
    np.testing.assert_array_equal(mask, np.asarray(keep_mask(jax.random.PRNGKey(0), rate, shape)))
    assert (mask != np.asarray(keep_mask(jax.random.PRNGKey(1), rate, shape))).any()


def test_keep_mask_of_an_odd_size_and_a_rate_of_no_short_binary_form():
    mask = np.asarray(keep_mask(jax.random.PRNGKey(2), 0.5, (3, 7)))  # 21: not a word's 32
    assert mask.shape == (3, 7) and mask.any() and not mask.all()
    odd = np.asarray(keep_mask(jax.random.PRNGKey(2), 0.3, (3, 7)))  # bernoulli
    bern = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(2), 0.7, (3, 7)))
    np.testing.assert_array_equal(odd, bern)


def test_an_unknown_conv_pool_kernel_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown conv_pool 'fft'.*strided"):
        models.create_model("cnn", conv_pool="fft")
