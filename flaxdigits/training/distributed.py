"""Joining a jax.distributed job (multi-host training), failing fast instead of hanging.

Every process of the job runs the same `flaxdigits train` command and calls join() before JAX
touches a device; afterwards jax.devices() spans all processes. Two timeouts bound a job that
cannot work: a job that has not formed within join_timeout_s (coordinator unreachable, a peer
never started) ends each waiting process with a message that says so; once formed, a process
that stops sending heartbeats for heartbeat_timeout_s (it died, or its host did) makes JAX's
coordination service end every other process, with "Terminating process because the JAX
distributed service detected fatal errors ... another task died".
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import threading

JOIN_TIMEOUT_S = 300
HEARTBEAT_TIMEOUT_S = 60
# Exit status of a process whose job did not form in time (the watchdog's os._exit).
EXIT_JOIN_TIMEOUT = 3
# JAX's own initialization deadline, behind the watchdog: its failure is an abort whose message
# blames "another task", so the watchdog, with a clearer message, speaks first.
_JAX_GRACE_S = 30
_ADDRESS_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class DistributedError(RuntimeError):
    """The distributed job is misconfigured or could not be joined."""


@dataclasses.dataclass(frozen=True)
class Job:
    """Which jax.distributed job to join. coordinator None: JAX detects the cluster itself
    (SLURM, Cloud TPU, Open MPI, ...) and the counts come from its environment."""

    coordinator: str | None = None  # "HOST:PORT" of process 0's coordination service
    num_processes: int | None = None
    process_id: int | None = None
    join_timeout_s: int = JOIN_TIMEOUT_S
    heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S

    def __post_init__(self):
        explicit = (self.coordinator, self.num_processes, self.process_id)
        if self.coordinator is not None and None in explicit:
            raise DistributedError(
                "--coordinator needs --num-processes and --process-id too (or none of them, "
                "with --distributed, where JAX detects the cluster)"
            )
        if self.coordinator is not None and not _ADDRESS_RE.match(self.coordinator):
            raise DistributedError(f"--coordinator {self.coordinator!r}: expected HOST:PORT")
        if self.num_processes is not None and self.num_processes < 1:
            raise DistributedError(f"--num-processes {self.num_processes}: must be at least 1")
        n = self.num_processes
        if self.process_id is not None and n is not None and not 0 <= self.process_id < n:
            raise DistributedError(
                f"--process-id {self.process_id}: must be in [0, {self.num_processes})"
            )
        if self.join_timeout_s < 1 or self.heartbeat_timeout_s < 1:
            raise DistributedError("the join and heartbeat timeouts must be at least 1 s")


def join(job: Job) -> None:
    """Join the job (CPU collectives over gloo); exits the process if it has not formed in time.

    Raises:
      DistributedError: JAX refused the job's settings (e.g. no cluster detected).
    """
    import jax

    # CPU devices of different processes exchange gradients over gloo (GPUs and TPUs use their
    # own collectives; the setting only concerns the CPU backend).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    watchdog = threading.Timer(job.join_timeout_s, _give_up, args=(job,))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=job.coordinator,
            num_processes=job.num_processes,
            process_id=job.process_id,
            initialization_timeout=job.join_timeout_s + _JAX_GRACE_S,
            heartbeat_timeout_seconds=job.heartbeat_timeout_s,
            shutdown_timeout_seconds=job.heartbeat_timeout_s,
        )
        jax.devices()  # the backend's own start-up exchanges device lists: part of joining
    except (ValueError, RuntimeError) as e:
        raise DistributedError(f"could not join the jax.distributed job: {e}") from None
    finally:
        watchdog.cancel()


def process_index() -> int:
    """This process's index in its job (0 outside one)."""
    import jax

    return jax.process_index()


def _give_up(job: Job) -> None:
    """The watchdog: the job did not form within join_timeout_s; say why, end the process."""
    where = f"the coordinator {job.coordinator}" if job.coordinator else "the detected coordinator"
    sys.stderr.write(
        f"flaxdigits train: error: the jax.distributed job did not form within "
        f"{job.join_timeout_s} s: {where} is unreachable, or not every process of the job has "
        "started (each runs the same command with its own --process-id; process 0 hosts the "
        "coordinator)\n"
    )
    sys.stderr.flush()
    os._exit(EXIT_JOIN_TIMEOUT)
