"""Data parallelism: 4 (forced) CPU devices give the same parameters as 1 for the same batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    import jax, numpy as np
    from flaxdigits.training.config import TrainConfig
    from flaxdigits.data.mnist import MNIST, load_mnist
    from flaxdigits.runs import load_run
    from flaxdigits.training.train import train

    assert len(jax.local_devices()) == 4, jax.local_devices()
    m = load_mnist("cache")
    small = MNIST(m.train_images[:1600], m.train_labels[:1600],
                  m.test_images[:400], m.test_labels[:400], "subset")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in ("mlp", "cnn"):
            cfg = TrainConfig(model=model, epochs=2, batch_size=64)
            params = {}
            for n in (1, 4):
                run = Path(tmp) / f"{model}-{n}"
                metrics = train(cfg, run, data=small, devices=n, progress=False, log=lambda _: 0)
                assert metrics["devices_used"] == n
                params[n] = [np.asarray(x) for x in jax.tree.leaves(load_run(run).model)]
            diffs = [float(np.max(np.abs(a - b))) for a, b in zip(params[1], params[4])]
            scale = max(float(np.max(np.abs(a))) for a in params[1])
            out[model] = {"max_abs_diff": max(diffs), "max_abs_param": scale}
    print(json.dumps(out))
    """
)


@pytest.mark.slow  # trains both models on real MNIST in a subprocess
def test_four_devices_match_one_device_within_float_tolerance(mnist):  # mnist fills the cache
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
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
