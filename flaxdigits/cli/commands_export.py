"""Subcommands that make and measure exported models: export, benchmark, compat, canvas-eval,
answers, robustness.

For each subcommand, `NAME_arguments(parser)` declares its arguments and `run_NAME(args)` calls
the one library function that does the work; `flaxdigits.cli.commands` pairs them in its table.
The exporter (JAX) and onnxruntime are imported inside the handlers, never at import time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a trained run directory (flaxdigits train --out)")
    p.add_argument("--out", required=True, help="models/NAME.onnx")
    p.add_argument("--int8", action="store_true", help="also write NAME.int8.onnx (static QDQ)")


def run_export(args: argparse.Namespace) -> int:
    from flaxdigits.export.onnx_export import export_run

    manifest = export_run(Path(args.run_dir), Path(args.out), int8=args.int8)
    for entry in manifest["files"]:
        print(
            f"{entry['file']}: {entry['size']} bytes, test accuracy "
            f"{entry['test_accuracy']:.4f}, sha256 {entry['sha256'][:12]}…"
        )
    return 0


def benchmark_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help=".onnx files to time")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])


def run_benchmark(args: argparse.Namespace) -> int:
    from flaxdigits.export.latency import benchmark, format_rows

    print(format_rows(benchmark([Path(p) for p in args.models], args.batch, args.threads)))
    return 0


def compat_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("python", help="interpreter of the venv with the other onnxruntime")
    p.add_argument("models", nargs="+", help=".onnx files to run in both onnxruntimes")
    p.add_argument("--images", type=int, default=500, help="MNIST test images to compare on")


def run_compat(args: argparse.Namespace) -> int:
    from flaxdigits.export.compat import check_files

    report = check_files(args.python, [Path(p) for p in args.models], args.images)
    print(json.dumps(report, indent=2))
    return 0 if all(f["loads"] for f in report["files"].values()) else 1


def canvas_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        nargs="+",
        default=["models"],
        metavar="DIR",
        help="directories with .onnx models; several render the canvases once for all",
    )
    p.add_argument(
        "--out",
        nargs="+",
        metavar="JSON",
        help="one report per --models directory, in order (default: reports/canvas_accuracy.json)",
    )
    p.add_argument("--limit", type=int, help="only the first N test digits")
    p.add_argument("--seed", type=int, default=0, help="random seed of the canvases' rendering")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")


def run_canvas_eval(args: argparse.Namespace) -> int:
    from flaxdigits.evaluation import canvases as canvas_eval

    outs = args.out or ["reports/canvas_accuracy.json"]
    if len(outs) != len(args.models):
        raise ValueError(
            f"{len(args.models)} --models directories but {len(outs)} --out reports: "
            "give one --out per directory, in the same order"
        )
    canvas_eval.run(
        [Path(d) for d in args.models],
        [Path(o) for o in outs],
        limit=args.limit,
        seed=args.seed,
        workers=args.workers,
    )
    return 0


def answers_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        nargs="+",
        default=["models"],
        metavar="PATH",
        help="directories with .onnx models, or .onnx files",
    )
    p.add_argument("--out", default="reports/answers.json", help="the report (JSON)")
    p.add_argument("--limit", type=int, help="only the first N test digits")


def run_answers(args: argparse.Namespace) -> int:
    from flaxdigits.evaluation import answers

    answers.run(args.models, Path(args.out), limit=args.limit)
    return 0


def robustness_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        nargs="+",
        default=["models"],
        metavar="PATH",
        help="directories with .onnx models, or .onnx files, e.g. models models/seed/cnn.onnx",
    )
    p.add_argument("--out", default="reports/robustness.json")
    p.add_argument("--limit", type=int, help="only the first N test digits")
    p.add_argument("--workers", type=int, help="processes (default: all cores)")


def run_robustness(args: argparse.Namespace) -> int:
    from flaxdigits.evaluation import robustness

    robustness.run(
        [Path(d) for d in args.models], Path(args.out), limit=args.limit, workers=args.workers
    )
    return 0
