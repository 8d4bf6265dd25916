"""Training: real-data accuracy after one epoch, resume equivalence, determinism, guards."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from flaxdigits.data.mnist import MNIST
from flaxdigits.runs import load_run
from flaxdigits.training import checkpoint
from flaxdigits.training import config as C
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.train import RESUME_ANY_PRECISION, train

METRIC_KEYS = {
    "model",
    "params",
    "epochs",
    "batch_size",
    "seed",
    "device",
    "train_accuracy",
    "train_loss",
    "test_accuracy",
    "test_loss",
    "overfit_gap",
    "seconds_per_epoch",
    "history",
}


pytestmark = pytest.mark.slow  # every test here trains on real MNIST (a subset or all of it)


@pytest.fixture(scope="module")
def small(mnist) -> MNIST:
    """2,000 real training and 500 test images: enough to exercise training mechanics quickly."""
    return MNIST(
        mnist.train_images[:2000],
        mnist.train_labels[:2000],
        mnist.test_images[:500],
        mnist.test_labels[:500],
        source="subset",
    )


def _params(run_dir):
    return [np.asarray(x) for x in jax.tree.leaves(load_run(run_dir).model)]


@pytest.mark.parametrize(("name", "minimum"), [("mlp", 0.950), ("cnn", 0.975)])
def test_one_epoch_on_real_mnist_reaches_accuracy(trained_runs, name, minimum):
    metrics = json.loads((trained_runs[name] / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["model"] == name and metrics["epochs"] == 1 and metrics["batch_size"] == 32
    assert metrics["test_accuracy"] >= minimum, metrics["test_accuracy"]
    assert metrics["overfit_gap"] == pytest.approx(
        metrics["train_accuracy"] - metrics["test_accuracy"]
    )
    (record,) = metrics["history"]
    keys = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds", "val_seconds"}
    keys |= {"test_loss", "test_accuracy", "test_seconds"}
    assert keys <= set(record)
    assert 0.0 < record["seconds"] < 600 and 0.0 < record["val_seconds"] < 600
    # the per-epoch test curve ends where the final metrics do (same parameters, same digits)
    assert record["test_accuracy"] == metrics["test_accuracy"]


def test_resume_matches_uninterrupted_run(tmp_path, small):
    config = TrainConfig(model="cnn", epochs=3, batch_size=64)
    train(config, tmp_path / "full", data=small, progress=False)
    # "Killed" after epoch 2: the same job stopped early, then resumed to 3 epochs. Its
    # evaluation chunk differs (as in a checkpoint from before that default changed): that
    # chunks evaluation only, so the job is the same and resumes.
    stopped = TrainConfig(model="cnn", epochs=2, batch_size=64, eval_batch_size=1000)
    assert stopped.eval_batch_size != config.eval_batch_size
    train(stopped, tmp_path / "resumed", data=small, progress=False)
    assert checkpoint.pointer(tmp_path / "resumed")["epoch"] == 2
    train(config, tmp_path / "resumed", data=small, resume=True, progress=False)
    for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "resumed"), strict=True):
        np.testing.assert_array_equal(a, b)
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert full["test_accuracy"] == resumed["test_accuracy"]
    assert [h["train_loss"] for h in full["history"]] == [
        h["train_loss"] for h in resumed["history"]
    ]


def test_same_seed_is_bitwise_deterministic_and_seed_matters(tmp_path, small):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = TrainConfig(model="mlp", epochs=1, batch_size=50, seed=seed)
        train(cfg, tmp_path / name, data=small, progress=False)
    a, b, c = (_params(tmp_path / n) for n in "abc")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_step_loop_runs_under_a_host_to_device_transfer_guard(tmp_path, small, monkeypatch):
    # train() guards its step loop; an implicit copy inside the loop must fail loudly.
    train(TrainConfig(model="mlp", epochs=1), tmp_path / "ok", data=small, progress=False)
    import flaxdigits.training.train as train_module

    def host_split(split, sharding):  # left on the host: every step would copy it
        return split

    monkeypatch.setattr(train_module, "place_split", host_split)
    with pytest.raises(Exception, match="Disallowed host-to-device transfer"):
        train(TrainConfig(model="mlp", epochs=1), tmp_path / "bad", data=small, progress=False)


def test_existing_run_is_never_overwritten(tmp_path, small):
    cfg = TrainConfig(model="mlp", epochs=1, batch_size=100)
    train(cfg, tmp_path / "run", data=small, progress=False)
    before = (tmp_path / "run" / checkpoint.POINTER).read_bytes()
    with pytest.raises(checkpoint.CheckpointError, match="already holds a trained checkpoint"):
        train(cfg, tmp_path / "run", data=small, progress=False)
    assert (tmp_path / "run" / checkpoint.POINTER).read_bytes() == before


def test_resume_refuses_a_different_job(tmp_path, small):
    train(TrainConfig(model="mlp", epochs=1, batch_size=100), tmp_path / "run", data=small)
    with pytest.raises(checkpoint.CheckpointError, match="batch_size: checkpoint 100"):
        train(
            TrainConfig(model="mlp", epochs=2, batch_size=50),
            tmp_path / "run",
            data=small,
            resume=True,
        )


def test_a_run_snapshots_the_requested_epochs_as_the_report_reads_them(tmp_path, small):
    config = TrainConfig(model="mlp", epochs=2, batch_size=100)
    metrics = train(config, tmp_path / "run", data=small, snapshot_epochs=[1], progress=False)
    assert set(metrics["snapshots"]) == {"1", "2"}
    assert metrics["test_accuracy"] == metrics["snapshots"]["2"]["test_accuracy"]
    short = train(
        TrainConfig(model="mlp", epochs=1, batch_size=100), tmp_path / "short", data=small
    )
    assert short["snapshots"]["1"] == metrics["snapshots"]["1"]  # epoch 1 of 2 == a 1-epoch run


class _Stop(Exception):
    pass


def _stop_after_first_epoch(line: str) -> None:
    if " epoch 1:" in line:  # logged right after epoch 1's checkpoint is saved
        raise _Stop


def test_robust_recipe_resumes_bit_identical_with_augmentation_and_schedule(tmp_path, small):
    config = TrainConfig.for_recipe("robust", model="mlp", epochs=3, batch_size=100)
    assert config.recipe_values.augment is not None
    full = train(config, tmp_path / "full", data=small, progress=False, log=lambda _: None)
    with pytest.raises(_Stop):  # "killed" after epoch 1
        train(config, tmp_path / "cut", data=small, progress=False, log=_stop_after_first_epoch)
    assert checkpoint.pointer(tmp_path / "cut")["epoch"] == 1
    train(config, tmp_path / "cut", data=small, resume=True, progress=False)
    for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "cut"), strict=True):
        np.testing.assert_array_equal(a, b)  # the same distortions and learning rates replayed
    assert full["recipe"] == "robust"
    assert full["recipe_values"]["augment"]["rotation"] == config.recipe_values.augment.rotation


def test_a_scheduled_recipe_refuses_to_resume_with_another_epoch_count(tmp_path, small):
    config = TrainConfig.for_recipe("robust", model="mlp", epochs=1, batch_size=100)
    train(config, tmp_path / "run", data=small, progress=False)
    longer = TrainConfig.for_recipe("robust", model="mlp", epochs=2, batch_size=100)
    with pytest.raises(checkpoint.CheckpointError, match="epochs: checkpoint 1"):
        train(longer, tmp_path / "run", data=small, resume=True, progress=False)


def test_a_recipe_edited_between_save_and_resume_is_refused(tmp_path, small, monkeypatch):
    config = TrainConfig.for_recipe("robust", model="mlp", epochs=1, batch_size=100)
    train(config, tmp_path / "run", data=small, progress=False, log=lambda _: None)
    recipe = config.recipe_values
    edited = dataclasses.replace(recipe, augment=dataclasses.replace(recipe.augment, slant=0.1))
    monkeypatch.setitem(C.RECIPES["robust"], "mlp", edited)
    with pytest.raises(checkpoint.CheckpointError, match=r"augment\.slant: checkpoint 0\.3"):
        train(config, tmp_path / "run", data=small, resume=True, progress=False)
    monkeypatch.setitem(C.RECIPES["robust"], "mlp", recipe)  # as saved: resumes (nothing to do)
    train(config, tmp_path / "run", data=small, resume=True, progress=False, log=lambda _: None)


def test_dropout_trains_differently_and_resumes_bit_identical(tmp_path, small, monkeypatch):
    config = TrainConfig.for_recipe("robust", model="mlp", epochs=2, batch_size=100)
    plain = train(config, tmp_path / "plain", data=small, progress=False, log=lambda _: None)
    recipe = dataclasses.replace(config.recipe_values, dropout=0.3)
    monkeypatch.setitem(C.RECIPES["robust"], "mlp", recipe)
    full = train(config, tmp_path / "full", data=small, progress=False, log=lambda _: None)
    assert full["recipe_values"]["dropout"] == 0.3
    assert full["train_loss"] != plain["train_loss"]  # the masks took effect in training
    with pytest.raises(_Stop):
        train(config, tmp_path / "cut", data=small, progress=False, log=_stop_after_first_epoch)
    train(config, tmp_path / "cut", data=small, resume=True, progress=False, log=lambda _: None)
    for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "cut"), strict=True):
        np.testing.assert_array_equal(a, b)  # the same masks replayed after the resume


def test_bfloat16_trains_float32_params_and_resumes_bit_identical(tmp_path, small):
    # Mixed precision with everything a step does: augmentation, dropout, conv+pool, schedule.
    config = TrainConfig.for_recipe("robust", model="cnn", epochs=2, batch_size=100)
    bf16 = dataclasses.replace(config, precision="bfloat16")
    f32 = train(config, tmp_path / "f32", data=small, progress=False, log=lambda _: None)
    full = train(bf16, tmp_path / "full", data=small, progress=False, log=lambda _: None)
    assert full["train_loss"] != f32["train_loss"]  # the step did run in bfloat16
    assert abs(full["test_accuracy"] - f32["test_accuracy"]) < 0.05
    with pytest.raises(_Stop):  # "killed" after epoch 1
        train(bf16, tmp_path / "cut", data=small, progress=False, log=_stop_after_first_epoch)
    train(bf16, tmp_path / "cut", data=small, resume=True, progress=False, log=lambda _: None)
    for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "cut"), strict=True):
        assert a.dtype == np.float32  # parameters (and so checkpoints) stay float32
        np.testing.assert_array_equal(a, b)
    assert load_run(tmp_path / "cut").config.precision == "bfloat16"


def test_a_checkpoint_resumes_in_another_precision_only_when_told(tmp_path, small):
    config = TrainConfig(model="mlp", epochs=2, batch_size=100)
    with pytest.raises(_Stop):
        train(config, tmp_path / "run", data=small, progress=False, log=_stop_after_first_epoch)
    bf16 = dataclasses.replace(config, precision="bfloat16")
    before = (tmp_path / "run" / checkpoint.POINTER).read_bytes()
    refusal = r"precision: checkpoint 'float32' vs requested 'bfloat16'.*--allow-precision-change"
    with pytest.raises(checkpoint.CheckpointError, match=refusal):
        train(bf16, tmp_path / "run", data=small, resume=True, progress=False)
    assert (tmp_path / "run" / checkpoint.POINTER).read_bytes() == before  # nothing trained
    lines: list[str] = []
    told = RESUME_ANY_PRECISION  # flaxdigits train --resume --allow-precision-change
    train(bf16, tmp_path / "run", data=small, resume=told, progress=False, log=lines.append)
    assert any("trained in float32: going on in bfloat16" in line for line in lines)
    assert checkpoint.pointer(tmp_path / "run")["epoch"] == 2
    run = load_run(tmp_path / "run")
    assert run.config.precision == "bfloat16"  # what the rest ran in; each epoch says its own
    assert [h["precision"] for h in run.metrics["history"]] == ["float32", "bfloat16"]
