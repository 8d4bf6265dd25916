"""BENCHMARKS.md from the results dict: one function per section, each table through
flaxdigits.core.tables.markdown_table."""

from __future__ import annotations

import statistics

from benchmarks.bench.training import SEED_TARGETS
from flaxdigits.core import contract
from flaxdigits.core.tables import markdown_table

ACCELERATORS = [
    "",
    "## Accelerators",
    "",
    "No GPU or TPU in this run. The same command on a GPU machine (JAX's CUDA wheels) "
    "fills the training tables for it; nothing in the training code is CPU-specific.",
]


def to_markdown(r: dict) -> str:
    """BENCHMARKS.md from the results dict."""
    lines = _machine(r["machine"]) + _training(r) + _seed_accuracy(r["training"]) + _floor(r)
    if not r["machine"]["accelerator"]:
        lines += ACCELERATORS
    if "inference" in r:
        lines += _inference(r)
    if "process" in r:
        lines += _page(r.get("page", {}))
    if "augmentation" in r:
        lines += _augmentation(r["augmentation"])
    lines += _robust_time_to_99(r.get("robust_cnn_time_to_99"))
    return "\n".join(lines) + "\n"


def _machine(m: dict) -> list[str]:
    return [
        "# Benchmarks",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"accelerator: {m['accelerator'] or 'none'}; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f". Date {m['date']}. Produced by `make bench` (benchmarks/bench/); raw numbers in "
        "benchmarks/results.json.",
    ]


def _training(r: dict) -> list[str]:
    header = ["Model", "Batch", "s/epoch", "images/s", "validation s", "compile s"]
    header += ["PyTorch s/epoch", "vs PyTorch"]
    rows = []
    for key, t in r["training"].items():
        name, batch = key.split("/")
        peer = r["peer"].get(key)
        ps = f"{peer['seconds_per_epoch']:.2f}" if peer else "n/a"
        ratio = f"{peer['seconds_per_epoch'] / t['seconds_per_epoch']:.2f}×" if peer else "n/a"
        rows.append(
            [
                name.upper(),
                batch,
                f"{t['seconds_per_epoch']:.2f}",
                f"{t['images_per_second']:,.0f}",
                f"{t['validation_seconds_per_epoch']:.2f}",
                f"{t['compile_seconds']:.2f}",
                ps,
                ratio,
            ]
        )
    return [
        "",
        "## Training (54,000 training images per epoch; medians over epochs; compile apart)",
        "",
        "s/epoch is the epoch's training (shuffle and steps), the span the PyTorch reference "
        "times too; the 6,000-image validation pass after each epoch is timed apart.",
        "",
        markdown_table(header, rows),
    ]


def _seed_accuracy(training: dict) -> list[str]:
    lines = ["", "Time to the seed's 5-epoch test accuracy (batch 32, training time only):", ""]
    for name in contract.MODEL_NAMES:
        t = training[f"{name}/32"]
        target = SEED_TARGETS[name]
        if t["seconds_to_seed_accuracy"] is None:
            best = max(t["test_accuracy_per_epoch"])
            lines.append(
                f"- {name.upper()}: {target:.1%} not reached in "
                f"{len(t['test_accuracy_per_epoch'])} epochs (best {best:.2%})"
            )
        else:
            lines.append(
                f"- {name.upper()}: {target:.1%} after {t['epochs_to_seed_accuracy']} epochs, "
                f"{t['seconds_to_seed_accuracy']:.1f} s"
            )
    return lines


def _floor(r: dict) -> list[str]:
    f = r["floor"]
    samples = f["matmul_gflops_samples"]
    header = ["Model", "FLOPs/epoch", "floor s/epoch", "median/floor b32"]
    header += ["fastest epoch/floor b32", "median/floor b128"]
    rows = []
    for name in contract.MODEL_NAMES:
        g = f[name]
        fastest = min(r["training"][f"{name}/32"]["epoch_seconds"])
        rows.append(
            [
                name.upper(),
                f"{g['train_flops_per_epoch'] / 1e9:.1f} G",
                f"{g['floor_seconds_per_epoch']:.2f}",
                f"{g['measured_over_floor_b32']:.2f}×",
                f"{fastest / g['floor_seconds_per_epoch']:.2f}×",
                f"{g['measured_over_floor_b128']:.2f}×",
            ]
        )
    spread = r["training"]["cnn/32"]["epoch_seconds"]
    return [
        "",
        "## Compute floor",
        "",
        f"float32 matmul rate (XLA, 1024×1024): {f['matmul_gflops']:.1f} GFLOP/s, the best of "
        f"{len(samples)} samples taken through the run (median {statistics.median(samples):.1f}). "
        "Training FLOPs per epoch = 54,000 × (forward FLOPs + the backward products training "
        "needs: all weight gradients, activation gradients of all layers but the first; "
        "`flaxdigits.models.train_flops_per_image`).",
        "",
        markdown_table(header, rows),
        "",
        f"CNN batch-32 epochs in this run: {min(spread):.2f}–{max(spread):.2f} s; matmul-rate "
        f"samples {min(samples):.0f}–{f['matmul_gflops']:.0f} GFLOP/s (a shared virtual machine: "
        "the neighbours' load moves both).",
    ]


def _inference(r: dict) -> list[str]:
    header = ["File", "bytes", "threads", "batch-1 p50 ms", "batch-1 p99 ms"]
    header += ["batch-256 images/s"]
    rows = []
    for file, res in r["inference"].items():
        for threads in (1, 2):
            t = res[f"threads{threads}"]
            rows.append(
                [
                    file,
                    f"{res['bytes']:,}",
                    threads,
                    f"{t['batch1']['p50_ms']:.3f}",
                    f"{t['batch1']['p99_ms']:.3f}",
                    f"{t['batch256_images_per_second']:,.0f}",
                ]
            )
    canvas = [
        [method, f"{c['preprocess']['p50_ms']:.2f}", f"{c['canvas_to_both']['p50_ms']:.2f}"]
        for method, c in r["canvas"].items()
    ]
    process = [
        [k, f"{p['cold_start_s']:.2f}", f"{p['peak_rss_mib']:.0f}", p["jax_imported"]]
        for k, p in r["process"].items()
    ]
    return [
        "",
        "## Inference (onnxruntime, CPU)",
        "",
        markdown_table(header, rows),
        "",
        markdown_table(
            ["Canvas 800×800", "preprocess p50 ms", "canvas → both models p50 ms"], canvas
        ),
        "",
        markdown_table(
            ["Predictor process", "cold start s", "peak RSS MiB", "JAX imported"], process, "lrrl"
        ),
    ]


def _page(page: dict) -> list[str]:
    if "clients1" not in page:
        return []  # skipped (no gradio_client) or not run
    rows = [[k, p["requests"], f"{p['p50_ms']:.1f}", f"{p['p95_ms']:.1f}"] for k, p in page.items()]
    return ["", markdown_table(["Page via gradio_client", "requests", "p50 ms", "p95 ms"], rows)]


def _augmentation(augmentation: dict) -> list[str]:
    rows = [
        [
            name.upper(),
            f"{a['ms_per_step_augmented']:.2f}",
            f"{a['ms_per_step_plain']:.2f}",
            f"{100 * a['augmentation_share_of_step']:.0f}%",
        ]
        for name, a in augmentation.items()
    ]
    header = ["Model", "ms/step augmented", "ms/step plain", "augmentation share of the step"]
    return [
        "",
        "## On-device augmentation (robust recipe)",
        "",
        "Median ms per training step at the recipe's batch, with and without its distortions "
        "(benchmarks/augment_cost.py; the two compiled loops timed call by call in turn).",
        "",
        markdown_table(header, rows),
    ]


def _robust_time_to_99(reached: dict | None) -> list[str]:
    if not (reached and reached.get("epochs")):
        return []
    return [
        "",
        f"The robust CNN's test accuracy (its per-epoch curve) first reached 99.0% after epoch "
        f"{reached['epochs']} of {reached['of_epochs']}: {reached['training_seconds']} s of "
        f"training of {reached['run_training_seconds']} s.",
    ]
