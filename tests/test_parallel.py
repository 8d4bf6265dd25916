"""Data parallelism: 4 (forced) CPU devices give the same parameters as 1 for the same batch."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.programs import command


@pytest.mark.slow  # trains both models on real MNIST in a subprocess
def test_four_devices_match_one_device_within_float_tolerance(mnist):  # mnist fills the cache
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        command("parallel_devices"),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for model, r in result.items():
        # 50 Adam steps: only the summation order of the gradient all-reduce differs.
        assert r["max_abs_diff"] <= 1e-4 * max(1.0, r["max_abs_param"]), (model, r)
