"""Live curves: event files read back with TensorBoard's own reader, resume, opt-outs."""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import metadata as hparams_metadata

from flaxdigits.data.mnist import MNIST
from flaxdigits.training import curves
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.state import learning_rate


def _read(logdir) -> EventAccumulator:
    """What TensorBoard shows: the reader with its default purge of orphaned data."""
    reader = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    reader.Reload()
    return reader


def _series(reader: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in reader.Scalars(tag)]


def _raw_steps(logdir, tag: str) -> list[int]:
    """Every record of tag in every file, as written (nothing purged)."""
    steps = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def _sums(loss: float, accuracy: float, n: int) -> np.ndarray:
    return np.array([loss * n, accuracy * n])


def test_learning_rates_are_the_ones_optax_applied():
    # Independent of our indexing: inject_hyperparams records the rate each update used.
    config = TrainConfig.for_recipe("robust", model="mlp", epochs=2)
    steps_per_epoch = 7
    rate_at = curves.learning_rates(config, steps_per_epoch)
    tx = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate(config, steps_per_epoch))
    params = jnp.zeros(3)
    opt_state = tx.init(params)
    for step in range(1, 2 * steps_per_epoch + 1):
        _, opt_state = tx.update(jnp.ones(3), opt_state, params)
        applied = float(opt_state.hyperparams["learning_rate"])
        assert rate_at(step) == pytest.approx(applied, rel=1e-6), step
    assert rate_at(1) == 0.0 and max(map(rate_at, range(1, 15))) == pytest.approx(2e-3)
    seed = TrainConfig(model="mlp")
    assert curves.learning_rates(seed, 10)(5) == seed.learning_rate


def test_curves_read_back_with_tensorboards_reader(tmp_path):
    board = curves.Curves(tmp_path, batch_size=32, learning_rate_at=lambda s: 1e-3, hparams={})
    board.steps(200, 200, _sums(0.5, 0.8, 200), seconds=2.0)
    board.steps(300, 100, _sums(0.25, 0.9, 100), seconds=0.5)
    record = {"epoch": 1, "train_loss": 0.4, "val_accuracy": 0.95, "images_per_second": 3840.0}
    board.epoch(300, record)  # flushes: readable before close
    reader = _read(tmp_path)
    assert _series(reader, "train/loss") == [(200, 0.5), (300, 0.25)]
    assert _series(reader, "train/images_per_second") == [(200, 3200.0), (300, 6400.0)]
    assert _series(reader, "train/step_ms") == [(200, 10.0), (300, 5.0)]
    assert [v for _, v in _series(reader, "train/learning_rate")] == pytest.approx([1e-3] * 2)
    assert _series(reader, "epoch/images_per_second") == [(300, 3840.0)]
    assert "epoch/epoch" not in reader.Tags()["scalars"]
    board.close(step=300)


def test_a_restart_hides_what_an_interrupted_attempt_wrote_past_its_checkpoint(tmp_path):
    first = curves.Curves(tmp_path, hparams={})
    first.steps(10, 10, _sums(1.0, 0.1, 10), seconds=1.0)
    first.epoch(10, {"epoch": 1, "val_accuracy": 0.5})  # the checkpoint after epoch 1
    first.steps(20, 10, _sums(0.9, 0.2, 10), seconds=1.0)  # then killed mid-epoch 2
    first.flush()
    resumed = curves.Curves(tmp_path, start_step=10, hparams={})
    resumed.steps(20, 10, _sums(0.8, 0.3, 10), seconds=1.0)
    resumed.epoch(20, {"epoch": 2, "val_accuracy": 0.6})
    resumed.close(step=20)
    assert _raw_steps(tmp_path, "train/loss") == [10, 20, 20]  # both attempts are on disk
    reader = _read(tmp_path)
    assert _series(reader, "train/loss") == [(10, 1.0), (20, pytest.approx(0.8))]
    assert _series(reader, "epoch/val_accuracy") == [(10, 0.5), (20, pytest.approx(0.6))]


def test_hyperparameters_hold_the_config_and_the_recipe(tmp_path):
    config = TrainConfig.for_recipe("robust", model="cnn")
    hparams = curves.hyperparameters(config, 421)
    assert hparams["model"] == "cnn" and hparams["learning_rate"] == 3e-3
    assert hparams["steps_per_epoch"] == 421 and hparams["recipe/schedule"] == "warmup_cosine"
    assert hparams["recipe/augment/rotation"] == 40.0
    assert json.loads(hparams["recipe/augment/scale"]) == [0.9, 1.1]
    assert curves.hyperparameters(TrainConfig(), 1)["recipe/augment"] == "none"
    curves.Curves(tmp_path, hparams=hparams).close(step=0)
    content = _read(tmp_path).PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = hparams_metadata.parse_session_start_info_plugin_data(content)
    assert start.hparams["model"].string_value == "cnn"
    assert start.hparams["recipe/augment/rotation"].number_value == 40.0


def test_without_tensorboardx_training_is_told_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as if not installed
    lines = []
    board = curves.open_curves(tmp_path, TrainConfig(), 10, 0, log=lines.append)
    assert not board.enabled and lines == [curves.MISSING]
    assert "pip install tensorboardX" in lines[0]
    board.steps(10, 10, _sums(1.0, 0.5, 10), seconds=1.0)  # a no-op, not an error
    board.close(step=10)
    assert not (tmp_path / curves.TB_DIR).exists()


def test_only_process_zero_writes_and_the_opt_out_writes_nothing(tmp_path, monkeypatch):
    assert not curves.open_curves(tmp_path, TrainConfig(), 10, 0, enabled=False).enabled
    assert curves.open_curves(tmp_path / "zero", TrainConfig(), 10, 0).enabled
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert not curves.open_curves(tmp_path / "one", TrainConfig(), 10, 0).enabled
    assert not (tmp_path / "one").exists() and not (tmp_path / curves.TB_DIR).exists()


def test_the_cli_opt_out_reaches_training(tmp_path, monkeypatch):
    import flaxdigits.training.train as train_module
    from flaxdigits.cli import main as cli

    seen = []

    def stop_before_training(config, out, **kwargs):
        seen.append(kwargs["tensorboard"])
        raise RuntimeError("stopped before training")

    monkeypatch.setattr(train_module, "train", stop_before_training)
    argv = ["train", "--model", "mlp", "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 1 and cli.main([*argv, "--no-tensorboard"]) == 1
    assert seen == [True, False]


# ---------------------------------------------------------------- real MNIST, tiny runs


@pytest.fixture(scope="module")
def tiny(mnist) -> MNIST:
    """2,000 real training and 200 test images: 1,800 to train on, 200 to validate."""
    return MNIST(
        mnist.train_images[:2000],
        mnist.train_labels[:2000],
        mnist.test_images[:200],
        mnist.test_labels[:200],
        source="subset",
    )


@pytest.fixture
def k10(monkeypatch):
    """The step loop syncs every 10 steps (results do not depend on it): several points per
    epoch of a tiny run."""
    import flaxdigits.training.train as train_module

    monkeypatch.setattr(train_module, "STEPS_PER_CALL", 10)
    return 10


@pytest.mark.slow
def test_a_cnn_run_writes_its_metrics_json_history_as_it_trains(tmp_path, tiny, k10):
    from flaxdigits.training.train import train

    config = TrainConfig(model="cnn", epochs=2, batch_size=50)  # 36 steps per epoch
    metrics = train(config, tmp_path / "run", data=tiny, progress=False, log=lambda _: None)
    reader = _read(tmp_path / "run" / curves.TB_DIR)
    history, steps = metrics["history"], 36
    for key in ("val_accuracy", "val_loss", "train_loss", "train_accuracy", "images_per_second"):
        expected = [((i + 1) * steps, np.float32(h[key])) for i, h in enumerate(history)]
        assert _series(reader, f"epoch/{key}") == expected, key
    for h in history:  # the event file's throughput is the run's own timing
        assert h["images_per_second"] == steps * config.batch_size / h["seconds"]
    # Every K steps: train loss over those steps, averaging to the epoch's (float32 sums).
    points = _series(reader, "train/loss")
    assert [s for s, _ in points] == [10, 20, 30, 36, 46, 56, 66, 72]
    chunk = np.diff([0, 10, 20, 30, 36])
    for epoch, h in enumerate(history):
        losses = [v for _, v in points[4 * epoch : 4 * epoch + 4]]
        assert np.dot(chunk, losses) / steps == pytest.approx(h["train_loss"], rel=1e-5)
    lr = _series(reader, "train/learning_rate")
    assert [v for _, v in lr] == [pytest.approx(config.learning_rate)] * 8
    assert all(v > 0 for _, v in _series(reader, "train/images_per_second"))
    start = reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = hparams_metadata.parse_session_start_info_plugin_data(start).hparams
    assert hparams["model"].string_value == "cnn" and hparams["epochs"].number_value == 2
    assert "_hparams_/session_end_info" in reader.PluginTagToContent("hparams")


class _Killed(Exception):
    pass


@pytest.mark.slow
def test_a_resumed_runs_curves_equal_an_uninterrupted_runs(tmp_path, tiny, k10, monkeypatch):
    from flaxdigits.training.train import train

    config = TrainConfig(model="mlp", epochs=2, batch_size=50)  # 36 steps per epoch
    quiet = {"data": tiny, "progress": False, "log": lambda _: None}
    train(config, tmp_path / "full", **quiet)
    steps = curves.Curves.steps

    def killed_in_epoch_2(self, step, *args):  # its first points reach the disk, then it dies
        steps(self, step, *args)
        if step > 36:
            self.flush()
            raise _Killed

    monkeypatch.setattr(curves.Curves, "steps", killed_in_epoch_2)
    with pytest.raises(_Killed):
        train(config, tmp_path / "cut", **quiet)
    monkeypatch.setattr(curves.Curves, "steps", steps)
    train(config, tmp_path / "cut", resume=True, **quiet)

    logdir = tmp_path / "cut" / curves.TB_DIR
    assert _raw_steps(logdir, "train/loss").count(46) == 2  # written by both attempts
    full, cut = _read(tmp_path / "full" / curves.TB_DIR), _read(logdir)
    assert full.Tags()["scalars"] == cut.Tags()["scalars"]
    for tag in full.Tags()["scalars"]:
        got, want = _series(cut, tag), _series(full, tag)
        assert [s for s, _ in got] == [s for s, _ in want], tag  # each step once, in order
        if "seconds" not in tag and "_ms" not in tag and "images_per_second" not in tag:
            assert got == want, tag  # the same numbers: resume replays the run exactly
