"""The comparison report: read from finished runs (never retrained), tables, plots, numbers."""

from __future__ import annotations

import json
import shutil

import pytest

from flaxdigits.cli.main import main
from flaxdigits.report import compare as report
from flaxdigits.training.config import TrainConfig


def test_compare_writes_tables_and_plots_reading_finished_runs(tmp_path, trained_runs):
    for name, run_dir in trained_runs.items():
        shutil.copytree(run_dir, tmp_path / "runs" / name)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    runs = str(tmp_path / "runs")
    assert main(["compare", "--epochs", "1", "--runs", runs, "--out", str(tmp_path)]) == 0
    after = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    assert after == before  # the runs were read, not trained again
    text = (tmp_path / "comparison.md").read_text()
    assert "## Results after 1 epoch" in text
    for row in ("Train accuracy", "Test accuracy", "Train loss", "Test loss", "Overfit gap"):
        assert f"| {row}" in text
    assert "| Parameters | 101,770 | 542,230 |" in text
    for png in ("training_curves", "confusion_matrices", "test_predictions", "training_samples"):
        blob = (tmp_path / f"{png}.png").read_bytes()
        assert blob.startswith(b"\x89PNG") and len(blob) > 10_000
    assert "## Confidence and 'not a digit'" in text  # report/answers.py's section
    assert "(`make answers`)" in text  # no reports/answers.json in tmp_path
    summary = json.loads((tmp_path / "comparison.json").read_text())
    mlp_acc = json.loads((trained_runs["mlp"] / "metrics.json").read_text())["test_accuracy"]
    assert summary["results"]["1"]["mlp"][0]["test_accuracy"] == mlp_acc


def test_run_dirs_are_named_by_model_and_seed(tmp_path):
    assert report.run_dir_for(tmp_path, "cnn", 0) == tmp_path / "cnn"
    assert report.run_dir_for(tmp_path, "mlp", 2) == tmp_path / "mlp-seed2"


def test_cells_are_mean_with_sample_std_over_seeds():
    assert report._fmt([0.98], "pct") == "98.00%"
    assert report._fmt([0.97, 0.99], "pct") == "98.00% ± 1.41"
    assert report._fmt([0.0123], "loss") == "0.0123"
    assert report._fmt([0.01], "pct", signed=True) == "+1.00%"


def test_a_run_trained_otherwise_is_refused_with_the_command_that_trains_the_right_one(
    tmp_path, trained_runs
):
    for name, run_dir in trained_runs.items():
        shutil.copytree(run_dir, tmp_path / name)
    with pytest.raises(report.MissingRunError, match="another batch_size") as refused:
        report.compare(epochs=[1], batch_size=64, out=tmp_path / "out", runs_dir=tmp_path)
    command = "flaxdigits train --recipe original --model mlp --epochs 1 --batch-size 64 --seed 0"
    assert f"`{command} --out {tmp_path / 'mlp'}`" in str(refused.value)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_run_from_before_precisions_reads_as_float32_and_one_in_bfloat16_is_refused(tmp_path):
    config = TrainConfig.for_recipe("original", model="mlp", epochs=1)
    metrics = config.to_dict() | {"snapshots": {"1": {}}, "test_accuracy": 0.9}
    del metrics["precision"]  # metrics.json as runs wrote it before --precision
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert report.read_run(config, tmp_path, [1])["precision"] == "float32"
    (tmp_path / "metrics.json").write_text(json.dumps(metrics | {"precision": "bfloat16"}))
    with pytest.raises(report.MissingRunError, match="another precision"):
        report.read_run(config, tmp_path, [1])


def test_a_missing_run_is_one_line_naming_the_command_and_nothing_is_trained(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["compare", "--epochs", "5", "10", "--runs", str(tmp_path), "--out", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err
    command = (
        "flaxdigits train --recipe original --model mlp --epochs 10 --batch-size 32 --seed 0 "
        f"--snapshot-epochs 5 --out {tmp_path / 'mlp'}"
    )
    assert err.count("\n") == 1 and f"`{command}`" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run started, no report written
