"""Crash safety: SIGKILL at random moments (checkpoint writes included) never loses a run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from flaxdigits import checkpoint
from flaxdigits.runs import load_run

pytestmark = pytest.mark.slow  # real-MNIST training and exports, killed and restarted

# Tiny epochs (10 steps each) so that much of the run is spent writing checkpoints.
SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from flaxdigits.config import TrainConfig
    from flaxdigits.data import MNIST, load_mnist
    from flaxdigits.train import train

    m = load_mnist("cache")
    tiny = MNIST(m.train_images[:220], m.train_labels[:220], m.test_images[:100],
                 m.test_labels[:100], "subset")
    cfg = TrainConfig(model="mlp", epochs=int(sys.argv[2]), batch_size=20, eval_batch_size=100)
    train(cfg, Path(sys.argv[1]), data=tiny, resume=True, progress=False, log=lambda _: None)
    """
)
EPOCHS = 60


def _start(run_dir):
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(run_dir), str(EPOCHS)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def _leaves(run_dir):
    return [np.asarray(x) for x in jax.tree.leaves(load_run(run_dir).model)]


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, mnist):
    reference = tmp_path / "reference"
    proc = _start(reference)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]

    run = tmp_path / "killed"
    rng = random.Random(1234)
    kills, epochs_seen = 0, []
    for attempt in range(30):
        before = checkpoint.pointer(run)["epoch"] if checkpoint.exists(run) else 0
        proc = _start(run)
        deadline = time.monotonic() + 120
        if attempt == 0:  # once during start-up, before any checkpoint exists
            time.sleep(rng.uniform(0.2, 1.0))
        else:  # then at random moments after this process wrote a checkpoint of its own
            while time.monotonic() < deadline and proc.poll() is None:
                if checkpoint.exists(run) and checkpoint.pointer(run)["epoch"] > before:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if checkpoint.exists(run):
            load_run(run)  # the last complete checkpoint always loads, never half-written
            epochs_seen.append(checkpoint.pointer(run)["epoch"])
        if len(epochs_seen) >= 6:
            break
    proc = _start(run)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    assert kills >= 5, kills
    assert len(set(epochs_seen)) >= 4, epochs_seen  # kills landed at many points of the run
    assert not list(run.glob(".*.tmp")), "temp files of killed writes are cleaned up"
    assert checkpoint.pointer(run)["epoch"] == EPOCHS
    for a, b in zip(_leaves(reference), _leaves(run), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sigkill_during_export_never_leaves_a_partial_model_or_manifest(tmp_path, trained_runs):
    import json as jsonlib

    import onnx

    from flaxdigits.serve.predictor import Predictor

    out = tmp_path / "models"
    cmd = [sys.executable, "-m", "flaxdigits", "export", str(trained_runs["mlp"])]
    cmd += ["--out", str(out / "mlp.onnx"), "--int8"]
    rng = random.Random(99)
    for _ in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(2.0, 12.0))  # imports, conversion, evaluation, writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in out.glob("*") if out.exists() else []:
            if path.name.startswith("."):
                continue  # a killed write's temp file: never read, replaced next time
            if path.suffix == ".onnx":
                onnx.checker.check_model(onnx.load_from_string(path.read_bytes()))
            else:
                jsonlib.loads(path.read_text())
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in ("mlp.onnx", "mlp.int8.onnx"):
        Predictor(out / name)  # complete, and its manifest agrees


def test_sigkill_during_compare_never_leaves_a_partial_report(tmp_path, trained_runs):
    import json as jsonlib
    import shutil

    from PIL import Image

    for name, run_dir in trained_runs.items():  # finished runs: compare only evaluates and writes
        shutil.copytree(run_dir, tmp_path / "runs" / name)
    cmd = [sys.executable, "-m", "flaxdigits", "compare", "--epochs", "1"]
    cmd += ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]

    def check_complete():
        for path in tmp_path.rglob("*"):
            if path.is_dir() or path.name.startswith("."):
                continue  # a killed write's temp file: never read, replaced next time
            if path.suffix == ".json":
                jsonlib.loads(path.read_text())
            elif path.suffix == ".png":
                with Image.open(path) as img:
                    img.load()
            elif path.suffix == ".md":
                assert path.read_text().endswith("\n"), path

    rng = random.Random(7)
    for _ in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3.0, 12.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        check_complete()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_complete()
    assert "| Test accuracy |" in (tmp_path / "comparison.md").read_text()
