"""Joining a jax.distributed job: settings refused before anything starts, with the flag named."""

from __future__ import annotations

import pytest

from flaxdigits.cli import main as cli
from flaxdigits.training.distributed import DistributedError, Job


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (dict(coordinator="10.0.0.1:1234"), "--coordinator needs --num-processes and --process-id"),
        (dict(coordinator="10.0.0.1", num_processes=2, process_id=0), "expected HOST:PORT"),
        (dict(coordinator="a b:1", num_processes=2, process_id=0), "expected HOST:PORT"),
        (dict(coordinator="h:1", num_processes=0, process_id=0), "must be at least 1"),
        (dict(coordinator="h:1", num_processes=2, process_id=2), r"must be in \[0, 2\)"),
        (dict(coordinator="h:1", num_processes=2, process_id=-1), r"must be in \[0, 2\)"),
        (dict(join_timeout_s=0), "timeouts must be at least 1 s"),
        (dict(heartbeat_timeout_s=0), "timeouts must be at least 1 s"),
    ],
)
def test_a_bad_job_is_refused_naming_the_flag(job, message):
    with pytest.raises(DistributedError, match=message):
        Job(**job)


@pytest.mark.parametrize(
    "coordinator", ["127.0.0.1:1234", "node-7.cluster:8476", "[::1]:1234", "localhost:1"]
)
def test_coordinator_addresses_that_are_accepted(coordinator):
    assert Job(coordinator, num_processes=2, process_id=1).coordinator == coordinator


def test_auto_detection_needs_no_address():
    assert Job().coordinator is None and Job(process_id=3).process_id == 3


def test_process_flags_without_a_coordinator_are_refused(tmp_path, capsys):
    argv = ["train", "--model", "mlp", "--out", str(tmp_path / "r"), "--num-processes", "2"]
    assert cli.main(argv) == 1
    assert "--num-processes and --process-id need --coordinator" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_bad_coordinator_fails_before_joining(tmp_path, capsys):
    argv = ["train", "--model", "mlp", "--out", str(tmp_path / "r"), "--coordinator", "nohost"]
    argv += ["--num-processes", "2", "--process-id", "0"]
    assert cli.main(argv) == 1
    assert "--coordinator 'nohost': expected HOST:PORT" in capsys.readouterr().err
