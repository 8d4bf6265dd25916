"""Training: real-data accuracy after one epoch, resume equivalence, determinism, checkpoints."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from flaxdigits import checkpoint
from flaxdigits.data import MNIST
from flaxdigits.train import TrainConfig, load_run, train

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
    assert keys <= set(record)
    assert 0.0 < record["seconds"] < 600 and 0.0 < record["val_seconds"] < 600


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
    import dataclasses

    import flaxdigits.train as train_module

    real_split = train_module.split_data

    def host_split(mnist, config, sharding=None):  # left on the host: every step would copy it
        split = real_split(mnist, config, sharding)
        fields = dataclasses.fields(split)
        return train_module.Split(**{f.name: np.asarray(getattr(split, f.name)) for f in fields})

    monkeypatch.setattr(train_module, "split_data", host_split)
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


@pytest.fixture
def saved_run(tmp_path, small):
    run = tmp_path / "run"
    train(TrainConfig(model="mlp", epochs=2, batch_size=100), run, data=small, progress=False)
    return run


def test_checkpoint_keeps_the_two_newest_files(saved_run):
    assert sorted(p.name for p in saved_run.glob("ckpt-*.msgpack")) == [
        "ckpt-0001.msgpack",
        "ckpt-0002.msgpack",
    ]
    assert not list(saved_run.glob("*.tmp"))


def test_tampered_checkpoint_is_refused(saved_run):
    path = saved_run / checkpoint.pointer(saved_run)["file"]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(checkpoint.CheckpointError, match="does not match the pointer"):
        load_run(saved_run)


def test_truncated_checkpoint_is_refused(saved_run):
    path = saved_run / checkpoint.pointer(saved_run)["file"]
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or modified"):
        load_run(saved_run)


def test_missing_and_foreign_checkpoints_are_refused(tmp_path, saved_run):
    with pytest.raises(checkpoint.CheckpointError, match="has no checkpoint"):
        load_run(tmp_path / "nothing-here")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / checkpoint.POINTER).write_text('{"hello": "world"}')
    with pytest.raises(checkpoint.CheckpointError, match="not a flaxdigits checkpoint pointer"):
        load_run(tmp_path / "foreign")


def test_checkpoint_of_another_model_does_not_load(saved_run):
    from flaxdigits.train import init_state

    _, cnn_template = init_state(TrainConfig(model="cnn"))
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this model"):
        checkpoint.restore(saved_run, cnn_template)


def test_config_validation_is_actionable():
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="vgg")
    with pytest.raises(ValueError, match="must be positive"):
        TrainConfig(model="mlp", epochs=0)
    with pytest.raises(ValueError, match="exceeds"):
        TrainConfig(model="mlp", batch_size=10**6).steps_per_epoch(54000)


def test_cpu_step_loop_updates_the_kernel_in_place_with_the_same_numbers(small, monkeypatch):
    # CPU_COMPILER_OPTIONS lets XLA:CPU update the loop-carried parameters in place (no
    # per-step copy of the CNN's 5408x100 kernel) and must not change a single number.
    import re

    import jax.numpy as jnp

    import flaxdigits.train as t

    config = TrainConfig(model="cnn")
    setup = t.prepare(config, small, t.make_mesh(1))  # as train() builds its job
    replicated, split = setup.replicated, setup.split
    state = jax.device_put(setup.state, replicated)
    order = t.epoch_order(state.rng, jnp.int32(0), int(split.train_images.shape[0]))
    args = (setup, config, state, order)

    def run(compiled):
        leaves = [jnp.copy(x) for x in jax.tree.leaves(state)]  # the call donates them
        sums = jax.device_put(jnp.zeros((2,), jnp.float32), replicated)
        n = jax.device_put(jnp.int32(20), replicated)
        leaves, sums = compiled(leaves, sums, n, order, split.train_images, split.train_labels)
        return [np.asarray(x) for x in [*leaves, sums]]

    tuned = t.compile_train_steps(*args)
    kernel_copy = re.compile(r"= f32\[5408,100\]\{[0-9,]*\} copy\(")
    assert not kernel_copy.search(tuned.as_text())
    monkeypatch.setattr(t, "CPU_COMPILER_OPTIONS", {})
    plain = t.compile_train_steps(*args)
    for a, b in zip(run(tuned), run(plain), strict=True):
        np.testing.assert_array_equal(a, b)
