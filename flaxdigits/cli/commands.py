"""Every subcommand of `flaxdigits`, in one table: its name, its one-line help, the function that
declares its arguments and the handler that runs it.

`build_parser` (flaxdigits.cli.parser) adds one subparser per row, in this order (the order of
`flaxdigits --help`); `main` (flaxdigits.cli.main) runs the row `args.command` names. A subcommand
is one row, so none can be declared without its handler, or handled without being declared.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from flaxdigits.cli import commands_export as export
from flaxdigits.cli import commands_release as release
from flaxdigits.cli import commands_serve as serve
from flaxdigits.cli import commands_train as train


@dataclass(frozen=True)
class Command:
    """One subcommand: `add_arguments(subparser)` declares it, `run(args)` does it (exit status).

    epilog, when given, returns text printed as written after the subcommand's --help.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    epilog: Callable[[], str] | None = None


COMMANDS: tuple[Command, ...] = (
    # The training side: MNIST, runs, the report.
    Command("data", "fetch and verify MNIST into the cache", train.data_arguments, train.run_data),
    Command(
        "train",
        "train one model; writes checkpoints and metrics.json",
        train.train_arguments,
        train.run_train,
    ),
    Command(
        "migrate",
        "convert a run's checkpoint from the msgpack format (before Orbax), once",
        train.migrate_arguments,
        train.run_migrate,
    ),
    Command(
        "evaluate",
        "metrics, confusion matrix and per-class accuracy",
        train.evaluate_arguments,
        train.run_evaluate,
    ),
    Command(
        "compare",
        "the MLP-vs-CNN report from finished runs (it never trains)",
        train.compare_arguments,
        train.run_compare,
    ),
    # Exported models: made, timed, checked and measured.
    Command(
        "export",
        "export a trained run to a self-contained ONNX file",
        export.export_arguments,
        export.run_export,
    ),
    Command(
        "benchmark",
        "onnxruntime ms per call of .onnx files (CPU)",
        export.benchmark_arguments,
        export.run_benchmark,
    ),
    Command(
        "compat",
        "run .onnx files in another Python's onnxruntime",
        export.compat_arguments,
        export.run_compat,
    ),
    Command(
        "canvas-eval",
        "accuracy of the exported models on MNIST digits redrawn as canvases",
        export.canvas_eval_arguments,
        export.run_canvas_eval,
    ),
    Command(
        "robustness",
        "accuracy of the exported models on rotated, slanted, thinned or thickened, "
        "scaled and shifted test digits",
        export.robustness_arguments,
        export.run_robustness,
    ),
    Command(
        "answers",
        "calibration and 'not a digit' of the exported models: ECE on the test digits, AUROC "
        "against held-out non-digits",
        export.answers_arguments,
        export.run_answers,
    ),
    # Exported models at work: on files, on the drawing page, in the browser.
    Command(
        "predict",
        "predict digits in image files with an ONNX model",
        serve.predict_arguments,
        serve.run_predict,
    ),
    Command(
        "serve",
        "the drawing page (Gradio) on 127.0.0.1:7860",
        serve.serve_arguments,
        serve.run_serve,
        epilog=serve.serve_epilog,
    ),
    Command(
        "web",
        "the static browser demo (onnxruntime-web) with the models",
        serve.web_arguments,
        serve.run_web,
    ),
    # Releases: packed, verified, turned into a Space.
    Command(
        "release",
        "pack float + int8 models, manifests and a model card into dist/*.tar.gz",
        release.release_arguments,
        release.run_release,
    ),
    Command(
        "verify",
        "check every sha256 of a release (.tar.gz or folder)",
        release.verify_arguments,
        release.run_verify,
    ),
    Command(
        "space",
        "a Hugging Face Space folder (app.py) from a release",
        release.space_arguments,
        release.run_space,
    ),
)

# name -> row, for main's dispatch
BY_NAME: dict[str, Command] = {command.name: command for command in COMMANDS}
