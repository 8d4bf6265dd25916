"""Live training curves: TensorBoard event files in RUN/tb, written as training goes.

tensorboardX builds the records (no TensorFlow). They are written on the training thread, a few
small records each time the step loop syncs anyway (every STEPS_PER_CALL steps), and made
visible with a flush per epoch and at most every FLUSH_SECONDS. tensorboardX's SummaryWriter is
not used: it hands events to a thread through a queue, and its flush() leaves the events still
queued unwritten, so a reader after flush() may not see the epoch just ended.

The step axis is the optimizer step. A run that starts at step S (resumed after an epoch, or
fresh at 0) opens a new event file that begins with a restart marker at S + 1: TensorBoard's
readers drop what an interrupted attempt wrote past the checkpoint, which the resumed run then
writes again.
"""

from __future__ import annotations

import json
import numbers
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.training.config import TrainConfig
from flaxdigits.training.state import learning_rate

TB_DIR = "tb"  # under the run directory: `tensorboard --logdir runs` finds every run's
# A live view sees the K-step points within this many seconds, not only at the epoch's end.
FLUSH_SECONDS = 10.0
# Shown beside each run's hyperparameters in TensorBoard's HParams dashboard.
HPARAM_METRICS = ("epoch/val_accuracy", "epoch/val_loss", "epoch/train_loss")
MISSING = (
    "live curves off: tensorboardX is not installed (pip install tensorboardX, or "
    "pip install 'flaxdigits[train]'); training goes on and metrics.json is written"
)


class Curves:
    """One run's event file, or nothing at all (curves off): every method is then a no-op."""

    def __init__(
        self,
        logdir: Path | None = None,
        *,
        start_step: int = 0,
        batch_size: int = 1,
        learning_rate_at: Callable[[int], float] | None = None,
        hparams: Mapping[str, bool | int | float | str] | None = None,
        text: str = "",
    ) -> None:
        self._writer = None
        if logdir is None:
            return
        from tensorboardX import summary
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self._summary, self._event = summary, Event
        self.batch_size, self.learning_rate_at = batch_size, learning_rate_at
        logdir.mkdir(parents=True, exist_ok=True)
        # Names sort in creation order (readers load files in name order), even within a second.
        self._writer = EventsWriter(str(logdir / "events"), f".{time.time_ns()}")
        restart = SessionLog(status=SessionLog.START)
        self._writer.write_event(
            Event(wall_time=time.time(), step=start_step + 1, session_log=restart)
        )
        self._hparams = summary.hparams(dict(hparams or {}), dict.fromkeys(HPARAM_METRICS))
        experiment, session_start, _ = self._hparams
        for s in (experiment, session_start, summary.text("run/config", text)):
            self._write(start_step, s)
        self._flushed = time.monotonic()

    @property
    def enabled(self) -> bool:
        """Whether events are written."""
        return self._writer is not None

    def steps(self, step: int, n: int, sums: np.ndarray, seconds: float) -> None:
        """The n steps that ended at `step`: sums = [loss, accuracy] summed over them, in
        `seconds` of wall time (from the previous sync to this one)."""
        if self._writer is None:
            return
        values = {
            "train/loss": sums[0] / n,
            "train/accuracy": sums[1] / n,
            "train/step_ms": 1000.0 * seconds / n,
            "train/images_per_second": n * self.batch_size / seconds,
        }
        if self.learning_rate_at is not None:
            values["train/learning_rate"] = self.learning_rate_at(step)
        self._scalars(step, values)
        if time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self.flush()

    def epoch(self, step: int, record: Mapping[str, Any]) -> None:
        """The epoch's history record (as metrics.json has it) at its last step, then a flush."""
        if self._writer is None:
            return
        values = {k: v for k, v in record.items() if k != "epoch" and isinstance(v, numbers.Real)}
        self._scalars(step, {f"epoch/{k}": v for k, v in values.items()})
        self.flush()

    def flush(self) -> None:
        """Everything written so far on disk, where a live TensorBoard reads it."""
        if self._writer is not None:
            self._writer.flush()
            self._flushed = time.monotonic()

    def close(self, step: int | None = None) -> None:
        """Close the file; with the final step, first mark the run finished for HParams."""
        if self._writer is None:
            return
        if step is not None:
            self._write(step, self._hparams[2])  # session end: succeeded
        self._writer.close()
        self._writer = None

    def _scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self._write(step, self._summary.scalar(tag, float(value)))

    def _write(self, step: int, summary) -> None:
        self._writer.write_event(self._event(wall_time=time.time(), step=step, summary=summary))


def open_curves(
    run_dir: Path,
    config: TrainConfig,
    steps_per_epoch: int,
    start_step: int,
    *,
    enabled: bool = True,
    log: Callable[[str], None] = print,
) -> Curves:
    """The run's curves in run_dir/tb from start_step on; off unless enabled, on process 0,
    with tensorboardX installed (if it is missing, one line says so and training goes on)."""
    import jax

    if not enabled or jax.process_index() != 0:
        return Curves()
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        log(MISSING)
        return Curves()
    return Curves(
        Path(run_dir) / TB_DIR,
        start_step=start_step,
        batch_size=config.batch_size,
        learning_rate_at=learning_rates(config, steps_per_epoch),
        hparams=hyperparameters(config, steps_per_epoch),
        text=_config_text(config, steps_per_epoch),
    )


def learning_rates(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """step -> the learning rate of the update that brought the step count to `step` (>= 1).

    A schedule is evaluated once for the whole run here, so that logging it later asks
    nothing of the device.
    """
    rate = learning_rate(config, steps_per_epoch)
    if not callable(rate):
        return lambda step: float(rate)
    total = config.epochs * steps_per_epoch
    rates = np.asarray(rate(np.arange(total)), dtype=np.float64)  # (total,): update k's rate
    return lambda step: float(rates[min(max(step, 1), total) - 1])


def hyperparameters(
    config: TrainConfig, steps_per_epoch: int
) -> dict[str, bool | int | float | str]:
    """The config and its recipe's values, flat ("recipe/augment/rotation"), as HParams takes
    them: None becomes "none" and tuples their JSON."""
    flat = {**config.to_dict(), "steps_per_epoch": steps_per_epoch}
    flat |= _flatten(config.recipe_values.to_dict(), "recipe/")
    return {k: _hparam_value(v) for k, v in flat.items()}


def _flatten(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out |= _flatten(v, f"{prefix}{k}/")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _hparam_value(v: Any) -> bool | int | float | str:
    if v is None:
        return "none"
    if isinstance(v, bool | int | float | str):
        return v
    return json.dumps(v)


def _config_text(config: TrainConfig, steps_per_epoch: int) -> str:
    """The config and recipe values as a Markdown code block for the Text dashboard."""
    values = {
        "config": config.to_dict(),
        "recipe_values": config.recipe_values.to_dict(),
        "steps_per_epoch": steps_per_epoch,
    }
    return "```\n" + json.dumps(values, indent=2) + "\n```"
