"""The training config: validated on construction, JSON round trip, what may change on resume."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flaxdigits.training.config import RECIPES, TrainConfig


def test_config_validation_is_actionable():
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="vgg")
    with pytest.raises(ValueError, match="must be positive"):
        TrainConfig(model="mlp", epochs=0)
    with pytest.raises(ValueError, match="exceeds"):
        TrainConfig(model="mlp", batch_size=10**6).steps_per_epoch(54000)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("dropout", 1.0, r"dropout must be in \[0, 1\)"),
        ("dropout", -0.1, r"dropout must be in \[0, 1\)"),
        ("augment.share", 1.5, r"augment.share must be in \[0, 1\]"),
        ("augment.mild", -0.5, r"augment.mild must be in \[0, 1\]"),
        ("augment.scale", (1.1, 0.9), "augment.scale must be"),
        ("augment.scale", (0.0, 1.0), "augment.scale must be"),
        ("augment.thickness", (2.0, -1.0), "augment.thickness must be"),
        ("augment.rotation", -30.0, "augment.rotation must be >= 0"),
    ],
)
def test_a_recipe_value_out_of_range_is_refused_when_the_recipe_is_made(field, value, match):
    robust = RECIPES["robust"]["cnn"]
    with pytest.raises(ValueError, match=match):
        if field.startswith("augment."):
            dataclasses.replace(robust.augment, **{field.removeprefix("augment."): value})
        else:
            dataclasses.replace(robust, **{field: value})


def test_every_recipe_in_the_config_is_valid():
    for models in RECIPES.values():
        for recipe in models.values():  # replace() re-runs the checks on the frozen values
            assert dataclasses.replace(recipe) == recipe


def test_config_round_trips_through_its_dict_and_refuses_unknown_keys():
    config = TrainConfig(model="mlp", epochs=3, learning_rate=5e-4, seed=2)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict(config.to_dict() | {"dropout": 0.5})


def test_only_the_epoch_count_and_evaluation_chunk_may_change_on_resume():
    saved = TrainConfig(model="mlp", epochs=2, batch_size=100)
    assert TrainConfig(model="mlp", epochs=5, batch_size=100).resume_conflicts(saved) == {}
    assert (
        TrainConfig(model="mlp", epochs=2, batch_size=100, eval_batch_size=1000).resume_conflicts(
            saved
        )
        == {}
    )
    assert TrainConfig(model="mlp", epochs=2, batch_size=50).resume_conflicts(saved) == {
        "batch_size": (100, 50)
    }


def test_a_recipe_edited_since_the_checkpoint_is_a_resume_conflict():
    config = TrainConfig.for_recipe("robust", model="cnn")
    saved = json.loads(json.dumps(config.recipe_values.to_dict()))  # as a checkpoint's meta
    assert config.recipe_conflicts(saved) == {}  # tuples saved as lists still match
    assert config.recipe_conflicts(None) == {}  # a checkpoint from before recipe values
    edited = saved | {"learning_rate": 0.01, "augment": saved["augment"] | {"rotation": 15.0}}
    assert config.recipe_conflicts(edited) == {
        "learning_rate": (0.01, config.recipe_values.learning_rate),
        "augment.rotation": (15.0, config.recipe_values.augment.rotation),
    }
    no_augment = saved | {"augment": None}
    assert set(config.recipe_conflicts(no_augment)) == {"augment"}
    seed = TrainConfig(model="cnn")  # the seed recipe has no augmentation at all
    assert set(seed.recipe_conflicts(saved)) >= {"augment", "schedule", "learning_rate"}


def test_precision_is_validated_and_defaults_to_the_recipes():
    with pytest.raises(ValueError, match=r"unknown precision 'float16'; choose one of"):
        TrainConfig(model="mlp", precision="float16")
    with pytest.raises(ValueError, match="unknown precision"):
        dataclasses.replace(RECIPES["robust"]["cnn"], precision="bf16")
    for recipe, models in RECIPES.items():
        for model, values in models.items():
            assert TrainConfig.for_recipe(recipe, model=model).precision == values.precision
    bf16 = TrainConfig.for_recipe("original", model="cnn", precision="bfloat16")
    assert bf16.precision == "bfloat16"
    assert TrainConfig.from_dict(bf16.to_dict()) == bf16
    old = {k: v for k, v in bf16.to_dict().items() if k != "precision"}  # saved before precisions
    assert TrainConfig.from_dict(old).precision == "float32"


def test_another_precision_is_a_resume_conflict_unless_allowed():
    saved = TrainConfig(model="cnn", epochs=2, precision="float32")
    wanted = TrainConfig(model="cnn", epochs=2, precision="bfloat16")
    assert wanted.resume_conflicts(saved) == {"precision": ("float32", "bfloat16")}
    assert wanted.resume_conflicts(saved, precision_change=True) == {}
    assert saved.resume_conflicts(wanted) == {"precision": ("bfloat16", "float32")}
    # the recipe's default precision is not a recipe value a checkpoint must match: the job's is
    recipe_values = json.loads(json.dumps(wanted.recipe_values.to_dict()))
    assert wanted.recipe_conflicts(recipe_values | {"precision": "bfloat16"}) == {}
    assert (
        wanted.recipe_conflicts({k: v for k, v in recipe_values.items() if k != "precision"}) == {}
    )


def test_the_cnn_training_kernel_is_the_recipes_and_a_checkpoint_from_before_trained_with_gather():
    from flax import nnx

    from flaxdigits.training.state import abstract_state, init_state

    for recipe, kernel in (("original", "gather"), ("robust", "strided")):
        config = TrainConfig.for_recipe(recipe, model="cnn")
        assert config.recipe_values.conv_pool == kernel
        graphdef, state = init_state(config)
        assert nnx.merge(graphdef, state.params).conv_pool == kernel  # what training runs
        assert abstract_state(config)[0] == graphdef
        before = json.loads(json.dumps(config.recipe_values.to_dict()))
        del before["conv_pool"]  # a checkpoint's meta from before recipes named the kernel
        conflicts = config.recipe_conflicts(before)
        assert conflicts == ({} if kernel == "gather" else {"conv_pool": ("gather", "strided")})
    with pytest.raises(ValueError, match="unknown conv_pool 'fft'"):
        dataclasses.replace(RECIPES["robust"]["cnn"], conv_pool="fft")
