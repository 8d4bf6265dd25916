"""What on-device augmentation costs: seconds per training step of the robust recipe with and
without its augmentation (same model, batch, schedule and data), what its dropout costs (where
it has one), and the robust CNN's time to 99.0% test accuracy read from its run. A development
script, not a test.

    .venv/bin/python -m benchmarks.augment_cost [--runs runs/robust] [--calls 12]

Timings alternate between the two compiled step loops, call by call, so that a neighbour's load
on a shared machine hits both alike; the medians and their ratio are printed as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
from pathlib import Path

import jax

from benchmarks.step_time import call_seconds
from flaxdigits.data.mnist import load_mnist
from flaxdigits.training import config, mesh, steps
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.train import compile_step_loop, prepare


def step_seconds(job: TrainConfig, mnist, calls: int) -> dict[str, float]:
    """Median seconds per step of the recipe as it is, with its augmentation switched off
    ("plain"), and with its dropout switched off too ("bare")."""
    recipe = job.recipe_values
    variants = {
        "augmented": {"augment": recipe.augment, "dropout": recipe.dropout},
        "plain": {"augment": None, "dropout": recipe.dropout},
    }
    if recipe.dropout:
        variants["bare"] = {"augment": None, "dropout": 0.0}
    loops = {}
    for label, changes in variants.items():
        setup = prepare(job, mnist, mesh.make_mesh(1))
        setup = setup._replace(spec=dataclasses.replace(setup.spec, **changes))
        state = jax.device_put(setup.state, setup.replicated)
        loops[label] = (setup, state, compile_step_loop(setup, state))
    times: dict[str, list[float]] = {label: [] for label in loops}
    for _ in range(calls):
        for label, (setup, state, compiled) in loops.items():
            times[label].append(call_seconds(setup, state, compiled, steps))
    medians = {label: statistics.median(t[1:]) for label, t in times.items()}  # [0]: warm-up
    out = {
        "ms_per_step_augmented": 1e3 * medians["augmented"],
        "ms_per_step_plain": 1e3 * medians["plain"],
        "augmentation_share_of_step": 1 - medians["plain"] / medians["augmented"],
        "augmented_over_plain": medians["augmented"] / medians["plain"],
    }
    if "bare" in medians:  # dropout's own cost, on the un-augmented step
        out["ms_per_step_bare"] = 1e3 * medians["bare"]
        out["dropout_share_of_plain_step"] = 1 - medians["bare"] / medians["plain"]
    return out


def time_to_accuracy(run_dir: Path, target: float) -> dict | None:
    """Training seconds and epochs until the run's test accuracy first reached target."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except OSError:
        return None
    seconds = 0.0
    for record in metrics["history"]:
        seconds += record["seconds"]
        # the per-epoch test curve (runs before it have only the snapshots' test figures)
        accuracy = record.get("test_accuracy")
        if accuracy is None:
            accuracy = metrics["snapshots"].get(str(record["epoch"]), {}).get("test_accuracy")
        if accuracy is not None and accuracy >= target:
            return {
                "epochs": record["epoch"],
                "training_seconds": round(seconds, 1),
                "of_epochs": len(metrics["history"]),
                "run_training_seconds": round(sum(h["seconds"] for h in metrics["history"]), 1),
            }
    return {"epochs": None, "reached": False, "final": metrics["test_accuracy"]}


def costs(mnist, calls: int = 12) -> dict[str, dict[str, float]]:
    """step_seconds of each model's robust recipe."""
    return {
        name: step_seconds(TrainConfig.for_recipe("robust", model=name), mnist, calls)
        for name in config.RECIPES["robust"]
    }


def main(argv=None) -> int:
    """Measure both models; print JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/robust", help="robust-recipe run directories")
    ap.add_argument("--calls", type=int, default=12, help="timed calls per variant")
    args = ap.parse_args(argv)
    out = {"machine": f"{platform.machine()}, {jax.local_devices()[0].device_kind}"}
    out |= costs(load_mnist(), args.calls)
    out["cnn_time_to_99.0%"] = time_to_accuracy(Path(args.runs) / "cnn", 0.990)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
