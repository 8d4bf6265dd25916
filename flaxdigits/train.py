"""Training: one pure, jitted Adam step over a single TrainState pytree; checkpoints; metrics.json.

The dataset lives on the device; each epoch's order is a permutation drawn on the device from
fold_in(seed, epoch) and each step gathers its batch by index there, so a step moves nothing
between host and device, and a resumed run replays exactly the same batches.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import flaxdigits
from flaxdigits import checkpoint, models
from flaxdigits.atomic import write_json_atomic
from flaxdigits.data import MNIST, load_mnist

VAL_SIZE_FRACTION = 0.1
# Training steps per jitted call (a fori_loop on the device); the host syncs once per call to
# update the progress bar. Results do not depend on it.
STEPS_PER_CALL = 200
# XLA:CPU compile options for the step loop. Without region analysis, copy insertion copies
# every loop-carried array at the top of the fori_loop body (the CNN's 5408x100 kernel: 2.2 MB
# per step) instead of updating it in place. Same numbers bit for bit; measured ~7% off a
# batch-32 CNN step on a 2-core CPU (paired median of 40 alternating calls).
CPU_COMPILER_OPTIONS = {"xla_cpu_copy_insertion_use_region_analysis": True}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training job. Defaults reproduce the seed experiment's recipe."""

    model: str = "cnn"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    val_fraction: float = VAL_SIZE_FRACTION  # the LAST 10% of the 60k, as Keras' validation_split
    # Evaluation chunk. 250 keeps the CNN's conv output (250x26x26x32 float32, 22 MB) near a
    # CPU's last-level cache: on the 2-core benchmark machine the 6,000-image validation pass
    # took ~0.23-0.27 s at 250 against ~0.52-0.60 s at 1000. It does not affect training.
    eval_batch_size: int = 250

    def __post_init__(self):
        if self.model not in models.MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {sorted(models.MODELS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be positive")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    def steps_per_epoch(self, n_train: int) -> int:
        """Full batches per epoch (the remainder, different every epoch, is skipped)."""
        steps = n_train // self.batch_size
        if steps < 1:
            raise ValueError(f"batch size {self.batch_size} exceeds the {n_train} training images")
        return steps

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training config keys {sorted(unknown)}")
        return cls(**d)


class TrainState(NamedTuple):
    """All mutable training state, one pytree: checkpoint, resume and export take this."""

    params: nnx.State
    opt_state: optax.OptState
    step: jax.Array  # int32 scalar: optimizer steps taken
    rng: jax.Array  # uint32[2]: data-order key; epoch e shuffles with fold_in(rng, e)


@dataclasses.dataclass(frozen=True)
class Split:
    """Train/validation/test arrays on the device: uint8 images (N, 28, 28), int32 labels."""

    train_images: jax.Array
    train_labels: jax.Array
    val_images: jax.Array
    val_labels: jax.Array
    test_images: jax.Array
    test_labels: jax.Array


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained run loaded from disk."""

    model: nnx.Module
    config: TrainConfig
    metrics: dict[str, Any]
    checkpoint_sha256: str


class Setup(NamedTuple):
    """What a training job is built from before its first step (see prepare)."""

    replicated: jax.sharding.NamedSharding  # whole arrays on every mesh device
    batch_sharding: jax.sharding.NamedSharding  # the batch axis split over the mesh
    split: Split  # on the device(s), replicated
    steps_per_epoch: int
    tx: optax.GradientTransformation
    graphdef: nnx.GraphDef
    state: TrainState  # fresh from config.seed, not yet placed on the mesh


# ------------------------------------------------------------------------------ pure functions


def to_float(images: jax.Array) -> jax.Array:
    """uint8 (B, 28, 28) -> float32 (B, 28, 28, 1) in [0, 1]."""
    return images.astype(jnp.float32)[..., None] / 255.0


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam with the config's constant learning rate (Keras' defaults otherwise)."""
    return optax.adam(config.learning_rate, b1=0.9, b2=0.999, eps=1e-7)


def init_state(config: TrainConfig) -> tuple[nnx.GraphDef, TrainState]:
    """Fresh model parameters and optimizer state from config.seed."""
    model = models.create_model(config.model, seed=config.seed)
    graphdef, params = nnx.split(model, nnx.Param)
    state = TrainState(
        params=params,
        opt_state=make_optimizer(config).init(params),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.fold_in(jax.random.PRNGKey(config.seed), 1),  # 0 is model init
    )
    return graphdef, state


def loss_and_logits(graphdef: nnx.GraphDef, params: nnx.State, images, labels):
    """Mean cross-entropy and logits of float images (B, 28, 28, 1) with int labels (B,)."""
    logits = nnx.merge(graphdef, params)(images)  # (B, 10)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, logits


def train_step(
    graphdef: nnx.GraphDef, tx: optax.GradientTransformation, state: TrainState, batch
) -> tuple[TrainState, jax.Array]:
    """One Adam step on batch = (float images (B,28,28,1), labels (B,)) -> (state, [loss, acc])."""
    images, labels = batch
    grad_fn = jax.value_and_grad(functools.partial(loss_and_logits, graphdef), has_aux=True)
    (loss, logits), grads = grad_fn(state.params, images, labels)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    new_state = state._replace(params=params, opt_state=opt_state, step=state.step + 1)
    return new_state, jnp.stack([loss, accuracy])


def epoch_order(rng: jax.Array, epoch: jax.Array, n_train: int) -> jax.Array:
    """The permutation of training indices for one epoch: a function of (seed, epoch) only."""
    return jax.random.permutation(jax.random.fold_in(rng, epoch), n_train)


def indexed_train_step(
    graphdef,
    tx,
    steps_per_epoch: int,
    batch_size: int,
    batch_sharding: jax.sharding.Sharding,
    state: TrainState,
    sums,
    order,
    images,
    labels,
):
    """train_step on the batch the step counter points at in this epoch's order (all on device).

    sums (2,) accumulates [loss, accuracy] over the epoch inside the same jit region. The batch
    is constrained to batch_sharding (split over the mesh's "data" axis): data parallelism.
    """
    start = (state.step % steps_per_epoch) * batch_size
    idx = jax.lax.dynamic_slice_in_dim(order, start, batch_size)  # (B,)
    batch = jax.lax.with_sharding_constraint((to_float(images[idx]), labels[idx]), batch_sharding)
    state, metrics = train_step(graphdef, tx, state, batch)
    return state, sums + metrics


def train_steps(
    graphdef,
    tx,
    steps_per_epoch: int,
    batch_size: int,
    batch_sharding: jax.sharding.Sharding,
    treedef: jax.tree_util.PyTreeDef,
    leaves: list[jax.Array],
    sums,
    n,
    order,
    images,
    labels,
):
    """n (an int32 device scalar) indexed_train_steps in one call, as a lax.fori_loop.

    The TrainState crosses the call boundary as its flat list of leaves (treedef rebuilds it):
    one dispatch per STEPS_PER_CALL steps, and no per-step Python pytree work, which on a 2-core
    CPU competes with XLA's threads for the cores (measured: ~15% of a batch-32 CNN step).
    """
    step = functools.partial(
        indexed_train_step, graphdef, tx, steps_per_epoch, batch_size, batch_sharding
    )
    state = jax.tree.unflatten(treedef, leaves)
    state, sums = jax.lax.fori_loop(
        0, n, lambda _, carry: step(*carry, order, images, labels), (state, sums)
    )
    return jax.tree.leaves(state), sums


def compile_train_steps(
    setup: Setup, config: TrainConfig, state: TrainState, order: jax.Array
) -> jax.stages.Compiled:
    """train_steps compiled for state's leaves and setup's device arrays (donates leaves, sums).

    Call it as (leaves, sums, n, order, train_images, train_labels) -> (leaves, sums). On CPU
    it is compiled with CPU_COMPILER_OPTIONS.
    """
    leaves, treedef = jax.tree.flatten(state)
    fn = jax.jit(
        functools.partial(
            train_steps,
            setup.graphdef,
            setup.tx,
            setup.steps_per_epoch,
            config.batch_size,
            setup.batch_sharding,
            treedef,
        ),
        donate_argnums=(0, 1),
    )
    cpu = all(d.platform == "cpu" for d in setup.batch_sharding.mesh.devices.flat)
    sums = jax.device_put(jnp.zeros((2,), jnp.float32), setup.replicated)
    n = jax.device_put(jnp.int32(STEPS_PER_CALL), setup.replicated)
    split = setup.split
    return fn.lower(leaves, sums, n, order, split.train_images, split.train_labels).compile(
        compiler_options=CPU_COMPILER_OPTIONS if cpu else None
    )


def eval_chunk(graphdef, params, images, labels, mask):
    """Summed loss, correct count, predictions and probabilities of one padded chunk."""
    loss, logits = loss_and_logits(graphdef, params, to_float(images), labels)
    del loss
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    preds = jnp.argmax(logits, -1)
    return (
        jnp.sum(per_example * mask),
        jnp.sum((preds == labels) * mask),
        preds,
        jax.nn.softmax(logits, -1),
    )


# ----------------------------------------------------------------------------------- evaluation


@functools.lru_cache(maxsize=8)
def _jitted_eval_chunk(graphdef: nnx.GraphDef):
    return jax.jit(functools.partial(eval_chunk, graphdef))


def evaluate_arrays(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    images,
    labels,
    batch_size: int = TrainConfig.eval_batch_size,
) -> dict[str, Any]:
    """Loss, accuracy, predictions and probabilities over a whole (on-device) uint8 split."""
    n = int(images.shape[0])
    fn = _jitted_eval_chunk(graphdef)
    loss_sum, correct, preds, probs = 0.0, 0, [], []
    for start in range(0, n, batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        m = x.shape[0]
        mask = jnp.ones((batch_size,), jnp.float32)
        if m < batch_size:  # pad the last chunk to the static shape, masked out
            pad = batch_size - m
            x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
            y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)])
            mask = mask.at[m:].set(0.0)
        s, c, p, pr = fn(params, x, y, mask)
        loss_sum += float(s)
        correct += int(c)
        preds.append(np.asarray(p[:m]))
        probs.append(np.asarray(pr[:m]))
    return {
        "loss": loss_sum / n,
        "accuracy": correct / n,
        "predictions": np.concatenate(preds),
        "probabilities": np.concatenate(probs),
    }


def make_mesh(devices: int | None = None) -> jax.sharding.Mesh:
    """A 1-D "data" mesh over the first `devices` local devices (None: all of them)."""
    available = jax.local_devices()
    n = len(available) if devices is None else devices
    if not 1 <= n <= len(available):
        raise ValueError(f"--devices {n}: this host has {len(available)} local device(s)")
    return jax.sharding.Mesh(np.asarray(available[:n]), ("data",))


def split_data(
    mnist: MNIST, config: TrainConfig, sharding: jax.sharding.Sharding | None = None
) -> Split:
    """Hold out the last val_fraction of the training set and put all splits on the device(s).

    With a sharding (replicated over the mesh), every device holds the whole dataset (47 MB):
    each step then gathers its batch locally and moves nothing between hosts and devices.
    """
    n_val = int(round(len(mnist.train_images) * config.val_fraction))
    n_train = len(mnist.train_images) - n_val

    def put(a: np.ndarray, dtype) -> jax.Array:
        return jax.device_put(np.asarray(a, dtype), sharding)

    return Split(
        train_images=put(mnist.train_images[:n_train], np.uint8),
        train_labels=put(mnist.train_labels[:n_train], np.int32),
        val_images=put(mnist.train_images[n_train:], np.uint8),
        val_labels=put(mnist.train_labels[n_train:], np.int32),
        test_images=put(mnist.test_images, np.uint8),
        test_labels=put(mnist.test_labels, np.int32),
    )


def prepare(config: TrainConfig, mnist: MNIST, mesh: jax.sharding.Mesh) -> Setup:
    """Shardings over mesh, the data on the device(s), the optimizer and a fresh state."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    split = split_data(mnist, config, replicated)
    graphdef, state = init_state(config)
    return Setup(
        replicated=replicated,
        batch_sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")),
        split=split,
        steps_per_epoch=config.steps_per_epoch(int(split.train_images.shape[0])),
        tx=make_optimizer(config),
        graphdef=graphdef,
        state=state,
    )


def device_description() -> str:
    """E.g. 'cpu (x86_64, 2 devices)' or 'gpu (NVIDIA H100 80GB HBM3, 1 device)'."""
    devices = jax.local_devices()
    kind = devices[0].device_kind if devices[0].platform != "cpu" else platform.machine()
    n = len(devices)
    return f"{devices[0].platform} ({kind}, {n} device{'s' if n > 1 else ''})"


# ------------------------------------------------------------------------------------ the loop


def train(
    config: TrainConfig,
    run_dir: Path,
    *,
    data: MNIST | None = None,
    resume: bool = False,
    data_source: str = "auto",
    snapshot_epochs: Iterable[int] = (),
    devices: int | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train one model, checkpointing every epoch, and write run_dir/metrics.json.

    Args:
      config: the training job.
      run_dir: where checkpoints and metrics.json go. Must not hold a checkpoint unless resume.
      data: MNIST arrays; loaded (verified) from data_source when None.
      resume: continue from run_dir's last complete checkpoint (a fresh start if there is none).
      data_source: MNIST source for flaxdigits.data.load_mnist.
      snapshot_epochs: epochs after which train/test metrics are recorded in metrics["snapshots"]
        (a 10-epoch run snapshotted at 5 equals a 5-epoch run: same seed, same data order).
      log: line printer.
      devices: data-parallel over this many local devices (None: all); the global batch
        config.batch_size is split across them, parameters are replicated.
      progress: show tqdm bars (None: only on a terminal).

    Returns:
      The metrics dict written to run_dir/metrics.json.

    Raises:
      checkpoint.CheckpointError: run_dir holds a checkpoint and resume is False, or the
        checkpoint to resume from is damaged or belongs to another configuration.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    if not resume and checkpoint.exists(run_dir):
        raise checkpoint.CheckpointError(
            f"{run_dir} already holds a trained checkpoint; pass --resume to continue it "
            "or choose another --out (nothing was overwritten)"
        )
    mesh = make_mesh(devices)
    n_devices = mesh.devices.size
    if config.batch_size % n_devices:
        raise ValueError(f"batch size {config.batch_size} does not split over {n_devices} devices")
    mnist = data if data is not None else load_mnist(data_source, log=log)
    setup = prepare(config, mnist, mesh)
    replicated, split, graphdef, state = setup.replicated, setup.split, setup.graphdef, setup.state
    n_train = int(split.train_images.shape[0])
    steps_per_epoch = setup.steps_per_epoch

    history: list[dict[str, Any]] = []
    snapshots: dict[str, dict[str, float]] = {}
    if resume and checkpoint.exists(run_dir):
        state, saved = checkpoint.restore(run_dir, state)
        _check_resumable(TrainConfig.from_dict(saved["config"]), config)
        history, snapshots = saved["history"], saved["snapshots"]
        log(f"resuming {run_dir} after epoch {len(history)} (step {int(state.step)})")
    elif resume:
        log(f"no checkpoint in {run_dir}: starting fresh")

    state = jax.device_put(state, replicated)
    leaves, treedef = jax.tree.flatten(state)
    order_fn = jax.jit(epoch_order, static_argnums=2)
    # The step counts a call may run, put on the device before the transfer guard goes up.
    chunks = [
        min(STEPS_PER_CALL, steps_per_epoch - i) for i in range(0, steps_per_epoch, STEPS_PER_CALL)
    ]
    counts = {n: jax.device_put(jnp.int32(n), replicated) for n in set(chunks)}
    t0 = time.perf_counter()
    order = order_fn(state.rng, jnp.int32(0), n_train)
    step_fn = compile_train_steps(setup, config, state, order)
    if int(split.val_images.shape[0]):  # the validation pass's executable, on its first chunk
        first = slice(0, config.eval_batch_size)
        x, y = split.val_images[first], split.val_labels[first]
        evaluate_arrays(graphdef, state.params, x, y, config.eval_batch_size)
    compile_seconds = time.perf_counter() - t0

    snapshot_epochs = set(snapshot_epochs) | {config.epochs}
    for epoch in range(len(history), config.epochs):
        t_epoch = time.perf_counter()
        order = order_fn(state.rng, jnp.int32(epoch), n_train)
        sums = jax.device_put(jnp.zeros((2,), jnp.float32), replicated)
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"{config.model} epoch {epoch + 1}/{config.epochs}",
            unit="step",
            disable=None if progress is None else not progress,
            leave=True,
        )
        # The step loop moves nothing host->device: any implicit copy here is a bug, made loud.
        shown = np.zeros(2)
        with bar, jax.transfer_guard_host_to_device("disallow"):
            for n in chunks:
                leaves, sums = step_fn(
                    leaves, sums, counts[n], order, split.train_images, split.train_labels
                )
                total = np.asarray(sums)  # syncs once per call (STEPS_PER_CALL steps)
                recent = (total - shown) / n
                bar.set_postfix(loss=f"{recent[0]:.4f}", acc=f"{recent[1]:.4f}")
                bar.update(n)
                shown = total
        state = jax.tree.unflatten(treedef, leaves)
        train_loss, train_acc = (float(v) for v in np.asarray(sums) / steps_per_epoch)
        seconds = time.perf_counter() - t_epoch
        # "seconds" is the epoch's training (shuffle + steps): the work train_flops_per_image
        # counts and what the PyTorch reference in benchmarks/ times. Validation is timed apart.
        record = {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_acc}
        if int(split.val_images.shape[0]):
            t_val = time.perf_counter()
            val = evaluate_arrays(
                graphdef, state.params, split.val_images, split.val_labels, config.eval_batch_size
            )
            record |= {"val_loss": val["loss"], "val_accuracy": val["accuracy"]}
            record["val_seconds"] = time.perf_counter() - t_val
        record["seconds"] = seconds
        history.append(record)
        if epoch + 1 in snapshot_epochs:
            snapshots[str(epoch + 1)] = split_metrics(graphdef, state.params, split, config)
        checkpoint.save(
            run_dir,
            state,
            {"config": config.to_dict(), "history": history, "snapshots": snapshots},
            epoch=epoch + 1,
        )
        line = f"{config.model} epoch {epoch + 1}: loss {train_loss:.4f} acc {train_acc:.4f}"
        if "val_accuracy" in record:
            line += f" val_acc {record['val_accuracy']:.4f}"
            timing = f"{seconds:.1f} s, validation {record['val_seconds']:.1f} s"
        else:
            timing = f"{seconds:.1f} s"
        log(f"{line} ({timing})")

    final = snapshots[str(config.epochs)]
    epoch_seconds = [h["seconds"] for h in history]
    metrics = {
        "model": config.model,
        "params": models.count_params(nnx.merge(graphdef, state.params)),
        **config.to_dict(),
        "device": device_description(),
        "devices_used": n_devices,
        **final,
        "seconds_per_epoch": float(np.mean(epoch_seconds)),
        "compile_seconds": compile_seconds,
        "history": history,
        "snapshots": snapshots,
        "checkpoint_sha256": checkpoint.pointer(run_dir)["sha256"],
        "data_source": mnist.source,
        "versions": {"flaxdigits": flaxdigits.__version__, "jax": jax.__version__},
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics


def evaluate_splits(graphdef, params, split: Split, batch_size: int) -> dict[str, dict]:
    """evaluate_arrays on the train, test and (if any) validation splits, once each."""
    parts = {
        "train": (split.train_images, split.train_labels),
        "test": (split.test_images, split.test_labels),
        "val": (split.val_images, split.val_labels),
    }
    return {
        name: evaluate_arrays(graphdef, params, images, labels, batch_size)
        for name, (images, labels) in parts.items()
        if int(images.shape[0])
    }


def summarize_splits(results: dict[str, dict]) -> dict[str, float]:
    """Loss and accuracy per split, plus the overfitting gap train - test."""
    out = {}
    for name in ("train", "test", "val"):
        if name in results:
            out |= {
                f"{name}_accuracy": results[name]["accuracy"],
                f"{name}_loss": results[name]["loss"],
            }
    out["overfit_gap"] = out["train_accuracy"] - out["test_accuracy"]
    return out


def split_metrics(graphdef, params, split: Split, config: TrainConfig) -> dict[str, float]:
    """Train/val/test loss and accuracy of params, plus the overfitting gap train - test."""
    return summarize_splits(evaluate_splits(graphdef, params, split, config.eval_batch_size))


def _check_resumable(saved: TrainConfig, wanted: TrainConfig) -> None:
    """A checkpoint resumes only the same job; only the epoch count may grow.

    eval_batch_size may differ too: it chunks evaluation and leaves the training unchanged.
    """
    diff = {
        k: (v, getattr(wanted, k))
        for k, v in saved.to_dict().items()
        if k not in ("epochs", "eval_batch_size") and getattr(wanted, k) != v
    }
    if diff:
        desc = ", ".join(f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in diff.items())
        raise checkpoint.CheckpointError(f"cannot resume a different training job ({desc})")


def load_run(run_dir: Path) -> Run:
    """Load a trained run: verified checkpoint, model with trained params, config, metrics.

    Args:
      run_dir: a directory written by `flaxdigits train`.

    Returns:
      Run(model, config, metrics, checkpoint_sha256).

    Raises:
      checkpoint.CheckpointError: missing, half-written, tampered or foreign checkpoint.
    """
    run_dir = Path(run_dir)
    saved = checkpoint.read(run_dir)
    try:
        config = TrainConfig.from_dict(saved["meta"]["config"])
    except (KeyError, ValueError, TypeError) as e:
        msg = f"{run_dir}: checkpoint config is not ours ({e})"
        raise checkpoint.CheckpointError(msg) from None
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: models.create_model(config.model)), nnx.Param)
    template = jax.eval_shape(lambda: init_state(config)[1])  # shapes only: nothing computed
    state = checkpoint.fill(saved, template, str(run_dir))
    metrics_path = run_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise checkpoint.CheckpointError(f"{metrics_path}: unreadable ({e})") from None
    return Run(
        model=nnx.merge(graphdef, state.params),
        config=config,
        metrics=metrics,
        checkpoint_sha256=checkpoint.pointer(run_dir)["sha256"],
    )
