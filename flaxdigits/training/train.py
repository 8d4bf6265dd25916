"""Training one model: prepare the job, restore, loop over epochs, checkpoint, write metrics.json.

`train()` reads as the algorithm; each part is a small function below it. The step itself and
the device loop are in steps.py, the state in state.py, evaluation in evaluate.py.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import flaxdigits
from flaxdigits import models
from flaxdigits.core.atomic import write_json_atomic
from flaxdigits.data.mnist import MNIST, Split, load_mnist, split_mnist
from flaxdigits.training import checkpoint, curves, mesh
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.evaluate import evaluate_arrays, evaluate_splits, summarize_splits
from flaxdigits.training.state import TrainState, init_state, make_optimizer
from flaxdigits.training.steps import STEPS_PER_CALL, StepSpec, compile_train_steps, epoch_order

# The epoch's permutation, compiled once per training size (the size is static).
_epoch_order = jax.jit(epoch_order, static_argnums=2)
# train(resume=RESUME_ANY_PRECISION): resume a checkpoint trained in the other precision too
# (flaxdigits train --resume --allow-precision-change).
RESUME_ANY_PRECISION = "any precision"


class Setup(NamedTuple):
    """What a training job is built from before its first step (see prepare)."""

    replicated: jax.sharding.NamedSharding  # whole arrays on every mesh device
    split: Split  # on the device(s), replicated
    spec: StepSpec
    state: TrainState  # fresh from config.seed, not yet placed on the mesh


class Progress(NamedTuple):
    """What a checkpoint carries besides the state: the epochs done so far."""

    history: list[dict[str, Any]]
    snapshots: dict[str, dict[str, float]]


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    data: MNIST | None = None,
    resume: bool | str = False,
    data_source: str = "auto",
    snapshot_epochs: Iterable[int] = (),
    devices: int | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    tensorboard: bool = True,
) -> dict[str, Any]:
    """Train one model, checkpointing every epoch, and write run_dir/metrics.json.

    Args:
      config: the training job.
      run_dir: where checkpoints and metrics.json go. Must not hold a checkpoint unless resume.
      data: MNIST arrays; loaded (verified) from data_source when None.
      resume: continue from run_dir's last complete checkpoint (a fresh start if there is none);
        RESUME_ANY_PRECISION: one trained in another precision too (True refuses it).
      data_source: MNIST source for flaxdigits.data.mnist.load_mnist.
      snapshot_epochs: epochs after which train/test metrics are recorded in metrics["snapshots"]
        (a 10-epoch run snapshotted at 5 equals a 5-epoch run: same seed, same data order).
      devices: data-parallel over this many local devices (None: all); the global batch
        config.batch_size is split across them, parameters are replicated. In a
        jax.distributed job (flaxdigits.training.distributed.join first) every process calls train()
        alike and the mesh spans all processes' devices; only process 0 logs and writes
        metrics.json, every process takes part in each checkpoint.
      log: line printer.
      progress: show tqdm bars (None: only on a terminal).
      tensorboard: write live curves to run_dir/tb as training goes (process 0; curves.py).

    Returns:
      The metrics dict written to run_dir/metrics.json.

    Raises:
      checkpoint.CheckpointError: run_dir holds a checkpoint and resume is False, or the
        checkpoint to resume from is damaged or belongs to another configuration (another
        precision too, unless resume is RESUME_ANY_PRECISION).
    """
    run_dir = Path(run_dir)
    if jax.process_index() != 0:
        log, progress = _silent, False
    _refuse_to_overwrite(run_dir, resume)
    job_mesh = mesh.make_mesh(devices)
    mnist = data if data is not None else load_mnist(data_source, log=log)
    setup = prepare(config, mnist, job_mesh)
    state, done = _restore(setup, config, run_dir, resume, log)
    steps = setup.spec.steps_per_epoch
    board = curves.open_curves(
        run_dir, config, steps, len(done.history) * steps, enabled=tensorboard, log=log
    )
    loop = _EpochLoop(setup, config, jax.device_put(state, setup.replicated), board)
    _run_epochs(loop, done, run_dir, set(snapshot_epochs) | {config.epochs}, progress, log)
    board.close(step=config.epochs * steps)
    metrics = _final_metrics(config, loop, done, mnist.source, job_mesh.devices.size)
    if jax.process_index() == 0:
        write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics


def _refuse_to_overwrite(run_dir: Path, resume: bool) -> None:
    """A finished or interrupted run is only ever continued, never trained over."""
    if not resume and checkpoint.exists(run_dir):
        raise checkpoint.CheckpointError(
            f"{run_dir} already holds a trained checkpoint; pass --resume to continue it "
            "or choose another --out (nothing was overwritten)"
        )


def _run_epochs(loop, done: Progress, run_dir: Path, snapshot_epochs: set[int], progress, log):
    """The epochs still to run, each checkpointed with the progress so far."""
    config = loop.config
    for epoch in range(len(done.history), config.epochs):
        record = loop.run_epoch(epoch, progress)
        done.history.append(record)
        if epoch + 1 in snapshot_epochs:
            done.snapshots[str(epoch + 1)] = loop.split_metrics()
        meta = {
            "config": config.to_dict(),
            "recipe_values": config.recipe_values.to_dict(),
            **done._asdict(),
        }
        checkpoint.save(run_dir, loop.state(), meta, epoch=epoch + 1)
        log(_epoch_line(config.model, record))


def _silent(_: str) -> None:
    """The log of processes other than 0 in a jax.distributed job."""


def prepare(config: TrainConfig, mnist: MNIST, job_mesh: jax.sharding.Mesh) -> Setup:
    """Shardings over the mesh, the data on the device(s), the step spec and a fresh state."""
    n_devices = job_mesh.devices.size
    if config.batch_size % n_devices:
        raise ValueError(f"batch size {config.batch_size} does not split over {n_devices} devices")
    replicated = mesh.replicated(job_mesh)
    split = place_split(split_mnist(mnist, config.val_fraction), replicated)
    graphdef, state = init_state(config)
    steps_per_epoch = config.steps_per_epoch(int(split.train_images.shape[0]))
    spec = StepSpec(
        graphdef=graphdef,
        tx=make_optimizer(config, steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        batch_size=config.batch_size,
        batch_sharding=mesh.batch_sharded(job_mesh),
        augment=config.recipe_values.augment,
        total_steps=steps_per_epoch * config.epochs,
        dropout=config.recipe_values.dropout,
        precision=config.precision,
        outliers=config.recipe_values.outliers,
    )
    return Setup(replicated=replicated, split=split, spec=spec, state=state)


def place_split(split: Split, sharding: jax.sharding.Sharding) -> Split:
    """Every array of the split on the device(s), replicated: each device holds the whole
    dataset (47 MB), so each device gathers its own rows of every batch and no image moves
    between devices or hosts (in a jax.distributed job every process loads and verifies MNIST
    itself and places the same arrays)."""
    return split.map(lambda a: jax.device_put(a, sharding))


def _restore(setup: Setup, config: TrainConfig, run_dir: Path, resume: bool | str, log):
    """The state and progress to start from: run_dir's checkpoint when resuming, else fresh."""
    fresh = setup.state
    if resume and checkpoint.exists(run_dir):
        state, saved = checkpoint.restore(run_dir, fresh, setup.replicated)
        saved_config = TrainConfig.from_dict(saved["config"])
        conflicts = config.resume_conflicts(saved_config, resume == RESUME_ANY_PRECISION)
        conflicts |= config.recipe_conflicts(saved.get("recipe_values"))
        if conflicts:
            desc = ", ".join(
                f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in conflicts.items()
            )
            if "precision" in conflicts:
                desc += (
                    f"; to go on in {config.precision} all the same, pass "
                    f"--allow-precision-change, or --precision {saved_config.precision} to "
                    "continue as it was trained"
                )
            raise checkpoint.CheckpointError(f"cannot resume a different training job ({desc})")
        if saved_config.precision != config.precision:
            log(
                f"{run_dir} was trained in {saved_config.precision}: going on in {config.precision}"
            )
        done = Progress(saved["history"], saved["snapshots"])
        step = int(mesh.fetch(state.step))
        log(f"resuming {run_dir} after epoch {len(done.history)} (step {step})")
        return state, done
    if resume:
        log(f"no checkpoint in {run_dir}: starting fresh")
    return fresh, Progress([], {})


class _EpochLoop:
    """The compiled step loop over one job's device data, and the state it carries."""

    def __init__(
        self, setup: Setup, config: TrainConfig, state: TrainState, board: curves.Curves
    ) -> None:
        self.setup, self.config, self.curves = setup, config, board
        self.leaves, self.treedef = jax.tree.flatten(state)
        spec, split = setup.spec, setup.split
        self.n_train = int(split.train_images.shape[0])
        self.local_split = split.map(mesh.local_copy)  # evaluation's: no collective across hosts
        # The step counts a call may run, put on the device before the transfer guard goes up.
        n = spec.steps_per_epoch
        self.chunks = [min(STEPS_PER_CALL, n - i) for i in range(0, n, STEPS_PER_CALL)]
        self.counts = {c: jax.device_put(jnp.int32(c), setup.replicated) for c in set(self.chunks)}
        t0 = time.perf_counter()
        self.step_fn = compile_step_loop(setup, state)
        if int(split.val_images.shape[0]):  # the validation pass's executable, on its first chunk
            first = slice(0, config.eval_batch_size)
            x, y = self.local_split.val_images[first], self.local_split.val_labels[first]
            params = mesh.local_copy(state.params)
            evaluate_arrays(spec.graphdef, params, x, y, config.eval_batch_size)
        self.compile_seconds = time.perf_counter() - t0

    def state(self) -> TrainState:
        return jax.tree.unflatten(self.treedef, self.leaves)

    def run_epoch(self, epoch: int, progress: bool | None) -> dict[str, Any]:
        """One epoch of steps, then validation (and the test curve): its history record."""
        spec, split = self.setup.spec, self.local_split
        t_epoch = time.perf_counter()
        train_loss, train_acc = self._steps(epoch, progress)
        # "seconds" is the epoch's training (shuffle + steps): the work train_flops_per_image
        # counts and what the PyTorch reference in benchmarks/ times. Validation is timed apart.
        seconds = time.perf_counter() - t_epoch
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc}
        record["precision"] = self.config.precision  # a run resumed in another one says where
        record |= self._evaluate("val", split.val_images, split.val_labels)
        # The test curve is a curve to read, as the Flax examples keep; never used to choose
        # anything (time to 99% in BENCHMARKS.md is read from it).
        record |= self._evaluate("test", split.test_images, split.test_labels)
        record["seconds"] = seconds
        # The throughput the curves show is this one, from the same two numbers.
        record["images_per_second"] = spec.steps_per_epoch * spec.batch_size / seconds
        self.curves.epoch(epoch * spec.steps_per_epoch + spec.steps_per_epoch, record)
        return record

    def _steps(self, epoch: int, progress: bool | None) -> tuple[float, float]:
        """The epoch's steps on the device, a call of STEPS_PER_CALL at a time: mean train loss
        and accuracy."""
        from tqdm.auto import tqdm

        spec, split, replicated = self.setup.spec, self.setup.split, self.setup.replicated
        order = _epoch_order(self.state().rng, jnp.int32(epoch), self.n_train)
        sums = jax.device_put(jnp.zeros((2,), jnp.float32), replicated)
        bar = tqdm(
            total=spec.steps_per_epoch,
            desc=f"{self.config.model} epoch {epoch + 1}/{self.config.epochs}",
            unit="step",
            disable=None if progress is None else not progress,
            leave=True,
        )
        # The step loop moves nothing host->device: any implicit copy here is a bug, made loud.
        shown, step, t_sync = np.zeros(2), epoch * spec.steps_per_epoch, time.perf_counter()
        with bar, jax.transfer_guard_host_to_device("disallow"):
            for n in self.chunks:
                self.leaves, sums = self.step_fn(
                    self.leaves, sums, self.counts[n], order, split.train_images, split.train_labels
                )
                total = mesh.fetch(sums)  # syncs once per call (STEPS_PER_CALL steps)
                recent = (total - shown) / n
                bar.set_postfix(loss=f"{recent[0]:.4f}", acc=f"{recent[1]:.4f}")
                bar.update(n)
                now, step = time.perf_counter(), step + n
                self.curves.steps(step, n, total - shown, now - t_sync)
                shown, t_sync = total, now
        train_loss, train_acc = (float(v) for v in mesh.fetch(sums) / spec.steps_per_epoch)
        return train_loss, train_acc

    def _evaluate(self, name: str, images: jax.Array, labels: jax.Array) -> dict[str, float]:
        """{NAME_loss, NAME_accuracy, NAME_seconds} of the current parameters on one split
        ({} for an empty split)."""
        if not int(images.shape[0]):
            return {}
        t0 = time.perf_counter()
        params = mesh.local_copy(self.state().params)
        result = evaluate_arrays(
            self.setup.spec.graphdef, params, images, labels, self.config.eval_batch_size
        )
        return {
            f"{name}_loss": result["loss"],
            f"{name}_accuracy": result["accuracy"],
            f"{name}_seconds": time.perf_counter() - t0,
        }

    def split_metrics(self) -> dict[str, float]:
        """Train/val/test loss and accuracy of the current parameters, and the overfitting gap."""
        results = evaluate_splits(
            self.setup.spec.graphdef,
            mesh.local_copy(self.state().params),
            self.local_split,
            self.config.eval_batch_size,
        )
        return summarize_splits(results)


def compile_step_loop(setup: Setup, state: TrainState) -> jax.stages.Compiled:
    """steps.compile_train_steps for this job's device data and mesh."""
    split, replicated = setup.split, setup.replicated
    sums = jax.device_put(jnp.zeros((2,), jnp.float32), replicated)
    n = jax.device_put(jnp.int32(STEPS_PER_CALL), replicated)
    order = _epoch_order(state.rng, jnp.int32(0), int(split.train_images.shape[0]))
    example = (sums, n, order, split.train_images, split.train_labels)
    cpu = mesh.all_cpu(setup.spec.batch_sharding.mesh)
    return compile_train_steps(setup.spec, state, example, cpu)


def _epoch_line(model: str, record: dict[str, Any]) -> str:
    """'cnn epoch 3: loss 0.0412 acc 0.9871 val_acc 0.9850 test_acc 0.9861 (3.5 s, validation
    0.2 s)'."""
    line = f"{model} epoch {record['epoch']}: loss {record['train_loss']:.4f}"
    line += f" acc {record['train_accuracy']:.4f}"
    timing = f"{record['seconds']:.1f} s"
    if "val_accuracy" in record:
        line += f" val_acc {record['val_accuracy']:.4f}"
        timing += f", validation {record['val_seconds']:.1f} s"
    if "test_accuracy" in record:
        line += f" test_acc {record['test_accuracy']:.4f}"
    return f"{line} ({timing})"


def _final_metrics(config, loop: _EpochLoop, done: Progress, source, n_devices) -> dict:
    """metrics.json: the config, the last epoch's split metrics, timings, history, provenance."""
    graphdef = loop.setup.spec.graphdef
    return {
        "model": config.model,
        "params": models.count_params(nnx.merge(graphdef, loop.state().params)),
        **config.to_dict(),
        "recipe_values": config.recipe_values.to_dict(),
        "device": mesh.device_description(),
        "devices_used": n_devices,
        **done.snapshots[str(config.epochs)],
        "seconds_per_epoch": float(np.mean([h["seconds"] for h in done.history])),
        "compile_seconds": loop.compile_seconds,
        "history": done.history,
        "snapshots": done.snapshots,
        # the state as last checkpointed (its pointer's state_sha256, where it has one)
        "checkpoint_state_sha256": checkpoint.state_digest(loop.state()),
        "data_source": source,
        "versions": {"flaxdigits": flaxdigits.__version__, "jax": jax.__version__},
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
