"""Crash safety: a SIGKILL inside any write (checkpoint, export, report) never loses a run or
leaves a partial file. flaxdigits.core.atomic's test hook pauses the chosen write halfway, so each
kill lands there, every time, on any machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from flaxdigits.core import atomic
from flaxdigits.runs import load_run
from flaxdigits.training import checkpoint
from tests.programs import command

# Tiny epochs (10 steps each) so that much of the run is spent writing checkpoints.
EPOCHS = 6
PAUSE_TIMEOUT_S = 300  # start-up (imports, data, compile) plus the epochs before the paused write


def _start(argv, tmp_path, pause=None, **popen):
    """Start argv; with pause="GLOB[@N]", that atomic write stops halfway (core.atomic)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop(atomic.PAUSE_ENV, None)
    if pause is not None:
        env[atomic.PAUSE_ENV] = pause
        env[atomic.PAUSED_ENV] = str(tmp_path / "paused.json")
        (tmp_path / "paused.json").unlink(missing_ok=True)
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen
    )


def _kill_inside_the_write(proc, tmp_path) -> dict:
    """Wait until proc is paused inside its write, SIGKILL it there; the pause note."""
    marker = tmp_path / "paused.json"
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"ended ({proc.returncode}) before the paused write: {_stderr(proc)}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no paused write within {PAUSE_TIMEOUT_S} s")
        time.sleep(0.02)
    note = json.loads(marker.read_text())
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed, not finished
    if os.path.isdir(note["temp"]):
        # An Orbax step killed whole but not yet renamed: all of it in the temporary directory,
        # nothing under the step's name.
        files = [p for p in Path(note["temp"]).rglob("*") if p.is_file()]
        assert note["written"] == sum(p.stat().st_size for p in files) > 0, note
        assert not os.path.exists(note["target"]), note
        return note
    # The kill landed mid-write: half of the bytes in the temp file, the target not replaced.
    assert 0 < note["written"] < note["size"], note
    assert os.path.getsize(note["temp"]) == note["written"], note
    return note


def _stderr(proc) -> str:
    return proc.stderr.read().decode()[-2000:] if proc.stderr else ""


def _leaves(run_dir):
    return [np.asarray(x) for x in jax.tree.leaves(load_run(run_dir).model)]


def test_a_paused_write_leaves_the_old_file_and_a_half_temp(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    proc = _start(command("atomic_writes", tmp_path), tmp_path, pause="data.*@2")
    note = _kill_inside_the_write(proc, tmp_path)
    assert note == {
        "target": str(target),
        "temp": note["temp"],
        "written": 1500,
        "size": 3000,
    }
    assert Path(note["temp"]).parent == tmp_path and Path(note["temp"]).name.startswith(
        ".data.bin."
    )
    assert target.read_bytes() == b"n" * 10  # the first matching write went through whole
    assert (tmp_path / "other.bin").read_bytes() == b"x" * 10  # not matching: never paused


def test_without_the_hook_writes_are_whole(tmp_path, monkeypatch):
    monkeypatch.delenv(atomic.PAUSE_ENV, raising=False)
    path = atomic.write_bytes_atomic(tmp_path / "a" / "b.bin", b"abc" * 100, mode=0o600)
    assert path.read_bytes() == b"abc" * 100 and (path.stat().st_mode & 0o777) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["b.bin"]  # no temp file left


@pytest.mark.slow
def test_sigkill_inside_checkpoint_writes_then_resume_equals_uninterrupted(tmp_path, mnist):
    argv = command("train_tiny")
    reference = tmp_path / "reference"
    proc = _start([*argv, str(reference), str(EPOCHS)], tmp_path)
    assert proc.wait(timeout=300) == 0, _stderr(proc)

    run = tmp_path / "killed"
    # (paused write, the epoch the pointer holds after the kill): every write of an epoch's end,
    # each killed halfway; every restart resumes from the last complete checkpoint.
    plan = [
        ("ckpt_*@2", 1),  # epoch 2's Orbax step, written but not renamed
        ("checkpoint.json@1", 1),  # epoch 2's pointer (its step is already final)
        ("ckpt_*@1", 1),  # epoch 2's step again, replacing the final one the last run left
        ("checkpoint.json@3", 3),  # epoch 4's pointer, after two complete epochs
        ("metrics.json", EPOCHS),  # the final metrics, after the last checkpoint
    ]
    for pause, epoch in plan:
        proc = _start([*argv, str(run), str(EPOCHS)], tmp_path, pause=pause)
        note = _kill_inside_the_write(proc, tmp_path)
        assert Path(note["target"]).parent in (run, run / checkpoint.STEPS), note
        assert checkpoint.pointer(run)["epoch"] == epoch, pause
        load_run(run)  # the last complete checkpoint always loads, never half-written
        assert not (run / "metrics.json").exists()
    proc = _start([*argv, str(run), str(EPOCHS)], tmp_path)
    assert proc.wait(timeout=300) == 0, _stderr(proc)
    # A checkpoint clears the temporary steps and pointers of killed ones; the killed metrics
    # write's temp file stays (never read, replaced next time).
    assert all(p.name.startswith(".metrics.json.") for p in run.rglob("*tmp*")), list(
        run.rglob("*tmp*")
    )
    assert checkpoint.pointer(run)["epoch"] == EPOCHS
    assert json.loads((run / "metrics.json").read_text())
    for a, b in zip(_leaves(reference), _leaves(run), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sigkill_inside_export_writes_never_leaves_a_partial_model_or_manifest(
    tmp_path, trained_runs
):
    import onnx

    from flaxdigits.serve.runtime.predictor import Predictor

    out = tmp_path / "models"
    cmd = [sys.executable, "-m", "flaxdigits", "export", str(trained_runs["mlp"])]
    cmd += ["--out", str(out / "mlp.onnx"), "--int8"]

    def check_complete():
        for path in out.glob("*") if out.exists() else []:
            if path.name.startswith("."):
                continue  # a killed write's temp file: never read, replaced next time
            if path.suffix == ".onnx":
                onnx.checker.check_model(onnx.load_from_string(path.read_bytes()))
            else:
                json.loads(path.read_text())

    # A fresh export killed inside its first write: nothing under the file's name.
    note = _kill_inside_the_write(_start(cmd, tmp_path, pause="mlp.onnx"), tmp_path)
    assert note["target"] == str(out / "mlp.onnx") and not (out / "mlp.onnx").exists()
    check_complete()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    whole = {p.name: p.read_bytes() for p in out.glob("*") if not p.name.startswith(".")}
    assert set(whole) == {"mlp.onnx", "mlp.int8.onnx", "mlp.json"}
    # Re-exports killed inside the int8 file's and the manifest's writes: the old files stand.
    for pause in ("mlp.int8.onnx", "mlp.json"):
        note = _kill_inside_the_write(_start(cmd, tmp_path, pause=pause), tmp_path)
        assert note["target"] == str(out / pause)
        check_complete()
        assert {p.name: p.read_bytes() for p in out.glob("*") if p.name in whole} == whole
    for name in ("mlp.onnx", "mlp.int8.onnx"):
        Predictor(out / name)  # complete, and its manifest agrees


def test_sigkill_inside_compare_writes_never_leaves_a_partial_report(tmp_path, trained_runs):
    import shutil

    from PIL import Image

    reports = tmp_path / "reports"
    for name, run_dir in trained_runs.items():  # finished runs: compare only evaluates and writes
        shutil.copytree(run_dir, tmp_path / "runs" / name)
    cmd = [sys.executable, "-m", "flaxdigits", "compare", "--epochs", "1"]
    cmd += ["--runs", str(tmp_path / "runs"), "--out", str(reports)]

    def check_complete():
        for path in (tmp_path / "runs").rglob("*"):
            if path.suffix == ".json" and not path.name.startswith("."):
                json.loads(path.read_text())
        for path in reports.rglob("*") if reports.exists() else []:
            if path.is_dir() or path.name.startswith("."):
                continue  # a killed write's temp file: never read, replaced next time
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".png":
                with Image.open(path) as img:
                    img.load()
            elif path.suffix == ".md":
                assert path.read_text().endswith("\n"), path

    # A plot, the summary and the report itself, each write killed halfway.
    for pause in ("*.png@2", "comparison.json", "comparison.md"):
        note = _kill_inside_the_write(_start(cmd, tmp_path, pause=pause), tmp_path)
        assert Path(note["target"]).parent == reports, note
        check_complete()
    assert not (reports / "comparison.md").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    check_complete()
    assert "| Test accuracy |" in (reports / "comparison.md").read_text()
