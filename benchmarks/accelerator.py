"""Training on whatever JAX device is present: a GPU or TPU, the CPU when there is none.

    .venv/bin/python -m benchmarks.accelerator [--epochs N] [--limit N]    # make accelerator-bench

Both models, both recipes (original and robust), both precisions (float32 and bfloat16), each
trained from scratch as `flaxdigits train` trains it: seconds and images per second of an epoch's
training (medians), compile time, the test accuracy reached, and the training time to the
original study's 5-epoch test accuracy (the time until the per-epoch test curve first reaches
it). The table goes into OUT/results.json under "accelerator", keyed by the device (a run on
another device adds its own table), and BENCHMARKS.md is written again from the results by
make bench's generator. --epochs and --limit shrink the budget (a smoke run; the CPU test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench.machine import machine
from benchmarks.bench.markdown import to_markdown
from benchmarks.bench.training import SEED_TARGETS
from flaxdigits.core import contract
from flaxdigits.core.atomic import write_json_atomic, write_text_atomic
from flaxdigits.data.idx import MNIST


def device() -> dict:
    """The JAX device the runs train on: its platform, kind and how many there are."""
    import jax

    devices = jax.devices()
    return {"platform": devices[0].platform, "kind": devices[0].device_kind, "count": len(devices)}


def first(mnist: MNIST, limit: int | None) -> MNIST:
    """The first `limit` training and test images of MNIST (all of it for None)."""
    if limit is None:
        return mnist
    return MNIST(
        mnist.train_images[:limit],
        mnist.train_labels[:limit],
        mnist.test_images[:limit],
        mnist.test_labels[:limit],
        f"{mnist.source}, first {limit} training and test images",
    )


def run(mnist: MNIST, recipe: str, model: str, precision: str, epochs: int | None) -> dict:
    """One job trained from scratch (the recipe's epochs unless given): its speed, compile
    time and when its test accuracy first reached the original study's."""
    from flaxdigits.training.config import TrainConfig
    from flaxdigits.training.train import train

    job = TrainConfig.for_recipe(recipe, model=model, precision=precision, epochs=epochs)
    with tempfile.TemporaryDirectory() as tmp:
        m = train(
            job, Path(tmp) / "run", data=mnist, progress=False, log=lambda _: None,
            tensorboard=False,
        )  # fmt: skip
    history = m["history"]
    secs = [h["seconds"] for h in history]
    accuracy = [h["test_accuracy"] for h in history]
    reached = next((i for i, a in enumerate(accuracy) if a >= SEED_TARGETS[model]), None)
    return {
        "epochs": job.epochs,
        "batch_size": job.batch_size,
        "seconds_per_epoch": statistics.median(secs),
        "images_per_second": statistics.median(h["images_per_second"] for h in history),
        "compile_seconds": m["compile_seconds"],
        "test_accuracy": accuracy[-1],
        "best_test_accuracy": max(accuracy),
        "seconds_to_seed_accuracy": None if reached is None else sum(secs[: reached + 1]),
        "epochs_to_seed_accuracy": None if reached is None else reached + 1,
    }


# The gate's recipe is the robust CNN's step with one non-digit row per 8 added: not measured
# apart (it would add two jobs for what the robust CNN's rows already tell).
MEASURED_RECIPES = ("original", "robust")


def measure(mnist: MNIST, epochs: int | None, limit: int | None) -> dict:
    """Every model, recipe and precision on this device: {"device", "machine", "rows"}."""
    data = first(mnist, limit)
    rows = {}
    for recipe in MEASURED_RECIPES:
        for model in contract.MODEL_NAMES:
            for precision in contract.PRECISIONS:
                key = f"{recipe}/{model}/{precision}"
                print(f"accelerator: {key}", flush=True)
                rows[key] = run(data, recipe, model, precision, epochs)
    return {
        "device": device(),
        "machine": machine(),
        "train_images": int(data.train_images.shape[0]),
        "test_images": int(data.test_images.shape[0]),
        "rows": rows,
    }


def record(measured: dict, out: Path, markdown: Path) -> dict:
    """measured into OUT/results.json (beside every other figure there, under its device)
    and BENCHMARKS.md written again from the results."""
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"machine": measured["machine"]}
    d = measured["device"]
    results.setdefault("accelerator", {})[f"{d['platform']}: {d['kind']}"] = measured
    write_json_atomic(path, results)
    write_text_atomic(markdown, to_markdown(results))
    return results


def main(argv=None, data: MNIST | None = None) -> int:
    """Measure on this device and write results.json and BENCHMARKS.md."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.accelerator", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--epochs", type=int, default=None, help="default: each recipe's")
    ap.add_argument("--limit", type=int, default=None, help="the first N training, test images")
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("--markdown", default="BENCHMARKS.md")
    args = ap.parse_args(argv)
    if data is None:
        from flaxdigits.data.mnist import load_mnist

        data = load_mnist()
    measured = measure(data, args.epochs, args.limit)
    record(measured, Path(args.out), Path(args.markdown))
    d = measured["device"]
    print(f"wrote {Path(args.out) / 'results.json'} and {args.markdown} ({d['kind']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
