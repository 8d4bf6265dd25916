"""The flaxdigits command: subcommands, evaluation output, comparison report, clean errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import numpy as np

from flaxdigits.cli import commands_serve
from flaxdigits.cli.commands import BY_NAME, COMMANDS
from flaxdigits.cli.main import main
from flaxdigits.cli.parser import build_parser
from tests.programs import command


def _run(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "flaxdigits", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        **kwargs,
    )


def test_help_lists_every_subcommand():
    out = _run("--help").stdout
    for sub in (
        "data",
        "train",
        "evaluate",
        "migrate",
        "compare",
        "export",
        "benchmark",
        "compat",
        "canvas-eval",
        "predict",
        "serve",
        "release",
        "verify",
        "space",
    ):
        assert sub in out


def test_every_declared_subcommand_has_one_handler_and_no_handler_is_undeclared():
    # The parser's subcommands are the table's rows, in order; each row has its own handler and
    # its own argument declarations (a row pasted with another's handler would run the wrong job).
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [c.name for c in COMMANDS]
    assert len({c.run for c in COMMANDS}) == len(COMMANDS)
    assert len({c.add_arguments for c in COMMANDS}) == len(COMMANDS)
    assert len(BY_NAME) == len(COMMANDS)  # main's lookup loses no row to a repeated name


def test_data_subcommand_reports_the_verified_source(mnist):  # mnist fills the cache
    proc = _run("data", "--source", "cache")
    assert proc.returncode == 0, proc.stderr
    assert "verified sha256 of all four files" in proc.stdout
    assert "(60000, 28, 28) uint8" in proc.stdout


def test_bad_input_is_one_line_without_traceback(tmp_path):
    proc = _run("evaluate", str(tmp_path / "missing"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    assert "has no checkpoint" in proc.stderr and "flaxdigits train" in proc.stderr
    proc = _run("train", "--model", "resnet", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_evaluate_gives_confusion_and_per_class_accuracy(trained_runs, capsys):
    assert main(["evaluate", str(trained_runs["mlp"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    cm = np.asarray(result["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 10000
    assert np.trace(cm) / 10000 == result["test_accuracy"]
    assert all(0.0 <= a <= 1.0 for a in result["per_class_accuracy"])
    saved = json.loads((trained_runs["mlp"] / "evaluation.json").read_text())
    assert saved["confusion_matrix"] == result["confusion_matrix"]
    assert main(["evaluate", str(trained_runs["mlp"])]) == 0
    assert "confusion matrix" in capsys.readouterr().out


def test_canvas_eval_without_models_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["canvas-eval", "--models", str(tmp_path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no .onnx models" in err and "Traceback" not in err
    assert not out.exists()


def test_serve_exit_timer_ends_a_shutdown_held_by_a_thread():
    # A non-daemon thread that outlives main() holds Python's exit open; the timer ends it.
    start = time.monotonic()
    done = subprocess.run(command("exit_timer"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, done.stderr
    assert time.monotonic() - start < 30
    assert "shutdown took over 1 s" in done.stderr and "in _shutdown" in done.stderr


def test_serve_exit_timer_leaves_a_running_caller_alone(capsys):
    # As after a test's `main(["serve", ...])`: the caller goes on.
    before = set(threading.enumerate())
    commands_serve.exit_within(0.05)
    (timer,) = set(threading.enumerate()) - before
    timer.join(timeout=5)
    assert not timer.is_alive()  # it fired, saw the main thread running, and did nothing
    assert "shutdown took over" not in capsys.readouterr().err


def test_train_precision_flag_defaults_to_the_recipes_and_the_change_needs_its_own_flag(
    monkeypatch, capsys
):
    from flaxdigits.cli import commands_train
    from flaxdigits.data import mnist as mnist_module
    from flaxdigits.training import train as train_module

    def parse(*flags):
        return build_parser().parse_args(["train", "--model", "cnn", "--out", "r", *flags])

    assert commands_train._train_config(parse()).precision == "float32"  # every recipe's, now
    assert commands_train._train_config(parse("--precision", "bfloat16")).precision == "bfloat16"
    proc = _run("train", "--model", "cnn", "--precision", "float16", "--out", "r")
    assert proc.returncode == 2 and "invalid choice: 'float16'" in proc.stderr
    calls = []
    metrics = {"model": "cnn", "test_accuracy": 1.0, "train_accuracy": 1.0, "seconds_per_epoch": 1}
    monkeypatch.setattr(mnist_module, "load_mnist", lambda *a, **k: None)
    monkeypatch.setattr(train_module, "train", lambda *a, **k: calls.append(k) or metrics)
    for flags in (["--resume"], ["--resume", "--allow-precision-change"], []):
        assert commands_train.run_train(parse("--precision", "bfloat16", *flags)) == 0
    assert [k["resume"] for k in calls] == [True, train_module.RESUME_ANY_PRECISION, False]
    capsys.readouterr()
