"""The flaxdigits command: subcommands, evaluation output, comparison report, clean errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np

from flaxdigits.cli import main


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
    for sub in ("data", "train", "evaluate", "compare", "export", "predict", "serve"):
        assert sub in out


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


def test_compare_writes_tables_and_plots_reusing_finished_runs(tmp_path, trained_runs, capsys):
    for name, run_dir in trained_runs.items():
        shutil.copytree(run_dir, tmp_path / "runs" / f"{name}-seed0")
    assert main(["compare", "--epochs", "1", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("reusing") == 2  # no retraining
    text = (tmp_path / "comparison.md").read_text()
    assert "## Results after 1 epoch" in text
    for row in ("Train accuracy", "Test accuracy", "Train loss", "Test loss", "Overfit gap"):
        assert f"| {row}" in text
    assert "| Parameters | 101,770 | 542,230 |" in text
    for png in ("training_curves", "confusion_matrices", "test_predictions", "training_samples"):
        blob = (tmp_path / f"{png}.png").read_bytes()
        assert blob.startswith(b"\x89PNG") and len(blob) > 10_000
    summary = json.loads((tmp_path / "comparison.json").read_text())
    mlp_acc = json.loads((trained_runs["mlp"] / "metrics.json").read_text())["test_accuracy"]
    assert summary["results"]["1"]["mlp"][0]["test_accuracy"] == mlp_acc
