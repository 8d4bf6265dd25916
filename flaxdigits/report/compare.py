"""The MLP-vs-CNN comparison: read one finished run per model and random seed, tabulate at each
epoch count, plot. It never trains: a missing run is an error naming the command that makes it.

One run per (model, seed) trains to the largest requested epoch count and snapshots train/test
metrics at the smaller ones: with a constant learning rate and data order = f(seed, epoch), the
epoch-5 snapshot of a 10-epoch run is exactly a 5-epoch run, at half the cost. `make all` trains
runs/original/mlp and runs/original/cnn that way once; the report and the export both read them.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.core import contract
from flaxdigits.core.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from flaxdigits.core.contract import MODEL_NAMES
from flaxdigits.core.tables import markdown_table
from flaxdigits.report import answers as report_answers
from flaxdigits.report import robustness as report_robust

_ROWS = (
    ("Train accuracy", "train_accuracy", "pct"),
    ("Test accuracy", "test_accuracy", "pct"),
    ("Train loss", "train_loss", "loss"),
    ("Test loss", "test_loss", "loss"),
    ("Overfit gap (train − test)", "overfit_gap", "pct"),
)


def _fmt(values: Sequence[float], kind: str, signed: bool = False) -> str:
    """Mean (± std over seeds when there are several) as a percentage or a loss."""
    arr = np.asarray(values, np.float64) * (100.0 if kind == "pct" else 1.0)
    digits, unit = (2, "%") if kind == "pct" else (4, "")
    sign = "+" if signed else ""
    text = f"{arr.mean():{sign}.{digits}f}{unit}"
    if len(arr) > 1:
        text += f" ± {arr.std(ddof=1):.{digits}f}"
    return text


def _figure_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def run_dir_for(runs: Path, name: str, seed: int) -> Path:
    """Where the run of model `name` with `seed` lives: runs/NAME for seed 0 (the run that is
    exported and served), runs/NAME-seedK for the other seeds."""
    return Path(runs) / (name if seed == 0 else f"{name}-seed{seed}")


class MissingRunError(ValueError):
    """A run the report needs is missing or was trained otherwise; the message names the command
    that trains it."""


def train_command(config, run_dir: Path, snapshot_epochs: Sequence[int]) -> str:
    """The `flaxdigits train` command that makes the run the report reads from run_dir."""
    snapshots = " ".join(str(e) for e in snapshot_epochs if e != config.epochs)
    return (
        f"flaxdigits train --recipe {config.recipe} --model {config.model} "
        f"--epochs {config.epochs} --batch-size {config.batch_size} --seed {config.seed}"
        + (f" --snapshot-epochs {snapshots}" if snapshots else "")
        + f" --out {run_dir}"
    )


def read_run(config, run_dir: Path, snapshot_epochs: Sequence[int]) -> dict[str, Any]:
    """The metrics of the finished run in run_dir, trained with config and snapshotted at every
    epoch count asked for; MissingRunError (with the command that trains it) otherwise."""
    metrics_path = Path(run_dir) / "metrics.json"
    command = train_command(config, run_dir, snapshot_epochs)
    if not metrics_path.is_file():
        raise MissingRunError(f"{run_dir} holds no finished run: train it first with `{command}`")
    metrics = json.loads(metrics_path.read_text())
    metrics["recipe"] = contract.recipe_name(metrics.get("recipe", ""))  # "seed", before 0.2
    metrics.setdefault("precision", "float32")  # a run from before precisions trained in float32
    done = {int(k) for k in metrics.get("snapshots", {})}
    different = sorted(k for k, v in config.to_dict().items() if metrics.get(k) != v)
    if different or not set(snapshot_epochs) <= done:
        what = f"another {', '.join(different)}" if different else "no snapshot at every epoch"
        raise MissingRunError(
            f"{run_dir} was trained with {what} than this report asks for: move it aside and "
            f"train it with `{command}`"
        )
    return metrics


def compare(
    epochs: Sequence[int] = (5, 10),
    seeds: int = 1,
    batch_size: int = 32,
    out: Path = Path("reports"),
    data_source: str = "auto",
    runs_dir: Path = Path("runs"),
    robust_runs_dir: Path | None = None,
) -> Path:
    """Compare MLP and CNN over seeds; write out/comparison.md, comparison.json and plots.

    Each (model, seed) run is read from run_dir_for(runs_dir, ...), trained with the original recipe
    to max(epochs) with snapshots at the others; MissingRunError names the command for a missing
    or different one. The robustness sections read robust_runs_dir's runs and the measurements
    in `out` (report/robustness.py), the confidence section reports/answers.json there
    (report/answers.py). Returns the path of comparison.md.
    """
    from flaxdigits.data.mnist import load_mnist
    from flaxdigits.runs import evaluate_run

    epochs = sorted(set(int(e) for e in epochs))
    if not epochs or epochs[0] < 1 or seeds < 1:
        raise ValueError("--epochs needs positive epoch counts and --seeds a positive count")
    out = Path(out)
    runs = _read_runs(epochs, seeds, batch_size, runs_dir)
    mnist = load_mnist(data_source, log=print)
    evaluations = {
        name: evaluate_run(
            run_dir_for(runs_dir, name, 0), mnist=mnist, with_predictions=True, write=False
        )
        for name in MODEL_NAMES
    }
    summary = _summary(epochs, seeds, batch_size, runs, evaluations)
    measurements = report_robust.read_measurements(out)
    measurements[report_answers.ANSWERS_FILE] = report_answers.read(out)
    summary["measured_files"] = report_answers.measured_files(measurements)
    plots = _write_plots(out, runs, evaluations, mnist)
    robust = report_robust.sections(measurements, out, runs_dir, robust_runs_dir)
    robust += report_answers.sections(measurements, out)
    write_json_atomic(out / "comparison.json", summary)
    return write_text_atomic(out / "comparison.md", _markdown(summary, plots, robust))


def _read_runs(
    epochs: list[int], seeds: int, batch_size: int, runs_dir: Path
) -> dict[str, list[dict[str, Any]]]:
    """{model: [metrics of its run with each seed]}, every run checked before any is used."""
    from flaxdigits.training.config import TrainConfig

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODEL_NAMES}
    for seed in range(seeds):
        for name in MODEL_NAMES:
            config = TrainConfig(model=name, epochs=epochs[-1], batch_size=batch_size, seed=seed)
            runs[name].append(read_run(config, run_dir_for(runs_dir, name, seed), epochs))
    return runs


def _structure() -> dict[str, dict[str, int]]:
    """Each model's parameter count, forward FLOPs per image and float32 weight bytes."""
    from flaxdigits.models import count_params, create_model, flops_per_image

    return {
        name: {
            "params": count_params(create_model(name)),
            "flops_per_image": flops_per_image(name),
            "float32_bytes": 4 * count_params(create_model(name)),
        }
        for name in MODEL_NAMES
    }


def _summary(epochs, seeds: int, batch_size: int, runs, evaluations) -> dict[str, Any]:
    """comparison.json: the settings, the structure, every run's snapshots and timings, and the
    seed-0 runs' per-class test accuracy."""
    import jax

    return {
        "epochs": epochs,
        "seeds": seeds,
        "batch_size": batch_size,
        "device": runs["cnn"][0]["device"],
        "jax": jax.__version__,
        "structure": _structure(),
        "results": {
            str(e): {name: [r["snapshots"][str(e)] for r in runs[name]] for name in MODEL_NAMES}
            for e in epochs
        },
        "seconds_per_epoch": {n: [r["seconds_per_epoch"] for r in runs[n]] for n in MODEL_NAMES},
        "per_class_accuracy": {n: evaluations[n]["per_class_accuracy"] for n in MODEL_NAMES},
    }


def _markdown(summary: dict[str, Any], plots: list[str], robust: list[str]) -> str:
    """The report text: per-epoch-count result tables, timing, structure, plots, robustness."""
    seeds = summary["seeds"]
    lines = [
        "# MLP vs CNN on MNIST",
        "",
        f"Seed recipe: Adam lr 1e-3, batch {summary['batch_size']}, cross-entropy; the last 10% "
        "of the 60k "
        "training images held out for validation (both models); test = the 10k test set. "
        f"{seeds} seed(s)" + (" (mean ± sample std)" if seeds > 1 else "") + ". "
        f"Device: {summary['device']}, JAX {summary['jax']}.",
        "",
    ]
    for e in summary["epochs"]:
        lines += _results_table(e, summary["results"][str(e)])
    lines += _structure_table(summary)
    lines += _per_class_table(summary)
    lines += ["", "## Plots", ""]
    lines += [f"![{p}]({p})" for p in plots]
    lines += ["", *robust]
    return "\n".join(lines) + "\n"


def _results_table(epochs: int, results: dict[str, list[dict]]) -> list[str]:
    """The metrics after `epochs` epochs, MLP beside CNN and their difference."""
    rows = []
    for label, key, kind in _ROWS:
        mlp = [r[key] for r in results["mlp"]]
        cnn = [r[key] for r in results["cnn"]]
        diff = [c - m for c, m in zip(cnn, mlp, strict=True)]
        rows.append([label, _fmt(mlp, kind), _fmt(cnn, kind), _fmt(diff, kind, signed=True)])
    return [
        f"## Results after {epochs} epoch{'s' if epochs > 1 else ''}",
        "",
        markdown_table(["Metric", "MLP", "CNN", "Difference (CNN − MLP)"], rows),
        "",
    ]


def _structure_table(summary: dict[str, Any]) -> list[str]:
    """Parameters, FLOPs, weight bytes and seconds per epoch, with the CNN / MLP ratio."""
    st = summary["structure"]
    rows = []
    for label, key in (
        ("Parameters", "params"),
        ("FLOPs per image (forward)", "flops_per_image"),
        ("Model size, float32 weights (bytes)", "float32_bytes"),
    ):
        a, b = st["mlp"][key], st["cnn"][key]
        rows.append([label, f"{a:,}", f"{b:,}", f"{b / a:.2f}×"])
    sec = summary["seconds_per_epoch"]
    a, b = float(np.mean(sec["mlp"])), float(np.mean(sec["cnn"]))
    rows.append(
        ["Seconds per epoch (training, excl. compile)", f"{a:.1f}", f"{b:.1f}", f"{b / a:.2f}×"]
    )
    return [
        "## Structure and cost",
        "",
        markdown_table(["", "MLP", "CNN", "Ratio (CNN / MLP)"], rows),
        "",
        "FLOPs count a multiply-add as 2 and each bias add, ReLU and pooling comparison as 1.",
        "",
    ]


def _per_class_table(summary: dict[str, Any]) -> list[str]:
    """Each model's seed-0 test accuracy per digit."""
    rows = [
        [name.upper(), *(f"{a * 100:.1f}" for a in summary["per_class_accuracy"][name])]
        for name in MODEL_NAMES
    ]
    return [
        "## Per-class test accuracy (seed 0, last epoch)",
        "",
        markdown_table(["Model", *range(10)], rows),
    ]


def _write_plots(out: Path, runs, evaluations, mnist) -> list[str]:
    """Training curves, confusion matrices, test-digit and training-sample grids (PNG); returns
    the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return [  # each figure drawn, written and closed before the next
        _save(_training_curves(plt, runs), out / "training_curves.png"),
        _save(_confusion_matrices(plt, evaluations), out / "confusion_matrices.png"),
        _save(_test_predictions(plt, evaluations["cnn"], mnist), out / "test_predictions.png"),
        _save(_training_samples(plt, mnist), out / "training_samples.png"),
    ]


def _training_curves(plt, runs):
    """Loss and accuracy per epoch of each model's seed-0 run, train and validation."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, color in zip(MODEL_NAMES, ("tab:blue", "tab:orange"), strict=True):
        hist = runs[name][0]["history"]
        ep = [h["epoch"] for h in hist]
        for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
            train_curve = [h[f"train_{key}"] for h in hist]
            ax.plot(ep, train_curve, "-o", color=color, label=f"{name} train")
            if "val_" + key in hist[0]:
                val_curve = [h[f"val_{key}"] for h in hist]
                ax.plot(ep, val_curve, "--s", color=color, label=f"{name} val")
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Training curves (seed 0)")
    return fig


def _confusion_matrices(plt, evaluations):
    """Each model's test confusion matrix, counts written in the cells."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax, name in zip(axes, MODEL_NAMES, strict=True):
        cm = np.asarray(evaluations[name]["confusion_matrix"])
        ax.imshow(np.log1p(cm), cmap="Blues")
        for i in range(10):
            for j in range(10):
                color = "white" if i == j else ("black" if cm[i, j] else "lightgray")
                ax.text(j, i, cm[i, j], ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(10))
        ax.set_yticks(range(10))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name.upper()}: test accuracy {evaluations[name]['test_accuracy']:.2%}")
    return fig


def _test_predictions(plt, cnn, mnist):
    """The first 24 test digits, then 8 of the CNN's mistakes, with true/pred/confidence."""
    preds, probs = cnn["test_predictions"], cnn["test_probabilities"]
    wrong = np.flatnonzero(preds != mnist.test_labels)
    wrong = wrong[wrong >= 24][:8]
    idx = np.concatenate([np.arange(24), wrong])
    fig, axes = plt.subplots(4, 8, figsize=(12, 6.6))
    for ax, i in zip(axes.flat, idx, strict=False):
        ok = preds[i] == mnist.test_labels[i]
        ax.imshow(mnist.test_images[i], cmap="gray")
        ax.set_title(
            f"true {mnist.test_labels[i]} pred {preds[i]}\n{probs[i, preds[i]]:.1%}",
            fontsize=8,
            color="black" if ok else "red",
        )
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("CNN on test digits (last row: mistakes, red)")
    return fig


def _training_samples(plt, mnist):
    """The first 40 training images with their labels."""
    fig, axes = plt.subplots(4, 10, figsize=(12, 5.2))
    for ax, i in zip(axes.flat, range(40), strict=False):
        ax.imshow(mnist.train_images[i], cmap="gray")
        ax.set_title(f"label {mnist.train_labels[i]}", fontsize=8)
        ax.axis("off")
    fig.suptitle("Training samples (first 40 of 60,000)")
    return fig


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    write_bytes_atomic(path, _figure_bytes(fig))
    plt.close(fig)
    return path.name
