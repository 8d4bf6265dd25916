"""What the figures were measured on: CPU, cores, memory, accelerator, versions, date, and the
machine's matmul rate in float32 and in bfloat16 (each precision's compute floor's yardstick)."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path

from flaxdigits.core import contract

VERSIONED = ("jax", "jaxlib", "flax", "optax", "onnxruntime", "jax2onnx", "gradio", "torch")


def _cpu_name() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def _memory_gib() -> float | None:
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return None
    return round(mem, 1) if mem else None


def _versions() -> dict[str, str]:
    versions = {}
    for pkg in VERSIONED:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return versions


REPOSITORY = Path(__file__).resolve().parents[2]


def commit(root: Path = REPOSITORY) -> str | None:
    """The commit measured (abbreviated; "-dirty" with uncommitted changes), None outside git."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, git from PATH
            ["git", "-C", str(root), "describe", "--always", "--dirty"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def machine() -> dict:
    """CPU model, cores, memory, accelerators, library versions, commit and date."""
    import jax

    devices = jax.devices()
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "accelerator": None
        if devices[0].platform == "cpu"
        else f"{len(devices)} x {devices[0].device_kind}",
        "python": platform.python_version(),
        "versions": _versions(),
        "commit": commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def matmul_gflops(n: int = 1024, repeats: int = 20, precision: str = "float32") -> float:
    """This machine's matmul rate through XLA in precision (median of repeats), GFLOP/s:
    float32 operands, or bfloat16 operands summed in float32 (`preferred_element_type`, as the
    mixed-precision step computes its products).

    The training benchmarks sample it before every run and take the best sample: on a shared
    (virtual) machine the rate swings ~20% with the neighbours' load, and the best rate gives
    the lowest floor, so the ratio to it is the strict one.
    """
    import jax
    import jax.numpy as jnp

    if precision not in contract.PRECISIONS:
        raise ValueError(
            f"unknown precision {precision!r}; choose one of {list(contract.PRECISIONS)}"
        )
    a = jnp.ones((n, n), precision)
    f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9
