"""Names of before 0.2 still work: "seed" named both the original study's recipe (now "original")
and its preprocessing (now "box"); the commands say so in one line, files and runs made before
the rename are read as the new names."""

from __future__ import annotations

import pytest

from flaxdigits.cli.parser import build_parser
from flaxdigits.core import contract
from flaxdigits.training.config import TrainConfig


def test_train_recipe_seed_is_the_original_recipe_and_says_so(capsys):
    args = build_parser().parse_args(["train", "--model", "mlp", "--recipe", "seed", "--out", "r"])
    assert args.recipe == "original"
    err = capsys.readouterr().err
    assert err == (
        "flaxdigits: --recipe seed is now --recipe original (the old name still works, for now)\n"
    )
    build_parser().parse_args(["train", "--model", "mlp", "--recipe", "robust", "--out", "r"])
    assert capsys.readouterr().err == ""  # the new names say nothing


def test_predict_preprocess_seed_is_box_and_says_so(capsys):
    args = build_parser().parse_args(["predict", "--model", "m.onnx", "--preprocess", "seed", "x"])
    assert args.preprocess == "box"
    assert "--preprocess seed is now --preprocess box" in capsys.readouterr().err


def test_an_unknown_name_is_still_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model", "mlp", "--recipe", "sed", "--out", "r"])
    choices = "'original', 'robust', 'gate'"
    assert f"invalid choice: 'sed' (choose from {choices})" in capsys.readouterr().err


def test_configs_and_runs_saved_before_the_rename_read_as_the_original_recipe():
    old = TrainConfig(model="cnn").to_dict() | {"recipe": "seed"}  # a metrics.json of 0.1
    assert TrainConfig.from_dict(old) == TrainConfig(model="cnn", recipe="original")
    assert TrainConfig.for_recipe("seed", model="mlp").recipe == "original"
    assert contract.recipe_name("seed") == "original" and contract.recipe_name("x") == "x"


def test_preprocessing_seed_is_box():
    assert contract.check_method("seed") == contract.check_method("box") == "box"
    with pytest.raises(ValueError, match="expected one of"):
        contract.check_method("bilinear")
