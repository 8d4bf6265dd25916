"""Multi-host training on one machine: `flaxdigits train` as a 2-process jax.distributed job.

Each process has 2 forced CPU devices and the processes exchange gradients over gloo, on
127.0.0.1. Against 1 process with 4 devices: the same global batches, the same parameters
within float tolerance. A peer killed mid-run ends the other within the heartbeat timeout, and
both restarted with --resume end equal to the uninterrupted 2-process run; the coordinator's
process killed ends the other too. A job that cannot form (no coordinator, a missing peer) ends
within the join timeout, saying why.
"""

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
from flaxdigits.training import checkpoint, distributed
from tests.support.ports import free_port

# 1,600 real MNIST digits (1,440 train, 160 val), batch 64: 22 steps per epoch, 3 epochs.
TRAIN = ["train", "--model", "mlp", "--epochs", "3", "--batch-size", "64", "--limit", "1600"]
HEARTBEAT_S = 10  # --heartbeat-timeout of the killed job: the others end within it (+ slack)
JOIN_S = 3  # --join-timeout of the job that never forms
# Max |Δ| / max |p| per parameter array, 2 processes vs 1 (measured 8e-7 on 66 Adam steps):
# only the summation order of the gradient all-reduce differs.
PARITY_RTOL = 1e-5


def _env(devices: int, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (atomic.PAUSE_ENV, atomic.PAUSED_ENV)}
    flags = env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    return env | {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags} | extra


def _start(out: Path, args=(), devices=2, **env) -> subprocess.Popen:
    argv = [sys.executable, "-m", "flaxdigits", *TRAIN, "--out", str(out), *args]
    return subprocess.Popen(
        argv,
        env=_env(devices, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _job(out: Path, extra=(), env0=None) -> list[subprocess.Popen]:
    """The two processes of a job training into out (process 0 first)."""
    port = free_port()
    procs = []
    for k in (0, 1):
        args = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
        args += ["--process-id", str(k), "--heartbeat-timeout", str(HEARTBEAT_S), *extra]
        procs.append(_start(out, args, **(env0 if env0 and k == 0 else {})))
    return procs


def _finish(procs, timeout=240) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]


def _params(run: Path) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(load_run(run).model)]


@pytest.mark.slow  # trains on real MNIST in 7 processes
def test_two_processes_match_one_and_resume_after_a_peer_dies(tmp_path, mnist):
    t0 = time.monotonic()
    _finish([_start(tmp_path / "one", devices=4), *_job(tmp_path / "two")])
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["devices_used"] == 4 and "2 processes" in metrics["device"]
    worst = max(
        float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
        for a, b in zip(_params(tmp_path / "one"), _params(tmp_path / "two"), strict=True)
    )
    print(f"2 processes vs 1: max relative parameter difference {worst:.2e}")
    assert worst <= PARITY_RTOL

    # Process 0 stops inside epoch 2's pointer write; process 1 waits for it; kill process 1.
    killed = tmp_path / "killed"
    err = _kill_one_while_paused(killed, tmp_path / "paused.json", epoch=2, victim=1)
    assert "another task died" in err and "stopped sending heartbeats" in err, err[-3000:]
    assert checkpoint.pointer(killed)["epoch"] == 1 and not (killed / "metrics.json").exists()

    _finish(_job(killed, extra=["--resume"]))
    assert checkpoint.pointer(killed)["epoch"] == 3
    for a, b in zip(_params(tmp_path / "two"), _params(killed), strict=True):
        np.testing.assert_array_equal(a, b)
    print(f"wall time {time.monotonic() - t0:.0f} s")


def _kill_one_while_paused(run, marker, *, epoch: int, victim: int) -> str:
    """A 2-process job whose process 0 stops inside epoch `epoch`'s pointer write (the other
    waits for it); SIGKILL process `victim`. The survivor must fail within the heartbeat
    timeout (+15 s slack); returns its stderr."""
    pause = {atomic.PAUSE_ENV: f"checkpoint.json@{epoch}", atomic.PAUSED_ENV: str(marker)}
    procs = _job(run, env0=pause)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs]
        assert time.monotonic() < deadline, "no paused write"
        time.sleep(0.05)
    dead, survivor = procs[victim], procs[1 - victim]
    dead.send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    _, err = survivor.communicate(timeout=HEARTBEAT_S + 60)
    waited = time.monotonic() - t_kill
    print(f"process {1 - victim} ended {waited:.1f} s after process {victim} was killed")
    assert survivor.returncode != 0 and dead.wait() == -signal.SIGKILL
    assert waited <= HEARTBEAT_S + 15, waited
    return err


@pytest.mark.slow  # starts a 2-process job on real MNIST
def test_the_coordinator_dying_ends_the_other_process(tmp_path, mnist):
    # Process 0 hosts the coordination service: killed (inside epoch 1's pointer write, while
    # process 1 waits for it), it takes the service with it and process 1 ends at once.
    err = _kill_one_while_paused(tmp_path / "run", tmp_path / "paused.json", epoch=1, victim=0)
    assert "another task died" in err and "leader task was preempted/died" in err, err[-3000:]
    assert not (tmp_path / "run" / checkpoint.POINTER).exists()  # its first write was killed


def test_a_job_that_cannot_form_ends_within_the_join_timeout(tmp_path):
    # Process 1 with nobody at the coordinator's address; process 0 whose peer never comes.
    t0 = time.monotonic()
    alone = ["--num-processes", "2", "--join-timeout", str(JOIN_S)]
    procs = [
        _start(
            tmp_path / "a",
            ["--coordinator", f"127.0.0.1:{free_port()}", "--process-id", "1", *alone],
        ),
        _start(
            tmp_path / "b",
            ["--coordinator", f"127.0.0.1:{free_port()}", "--process-id", "0", *alone],
        ),
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == distributed.EXIT_JOIN_TIMEOUT, err[-3000:]
        assert f"the jax.distributed job did not form within {JOIN_S} s" in err, err[-3000:]
        assert "is unreachable, or not every process of the job has started" in err
    # Start-up (imports) plus the timeout: well before JAX's own deadline would end it.
    assert time.monotonic() - t0 < JOIN_S + 30
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
