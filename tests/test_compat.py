"""Running exported files in an older onnxruntime, in a venv of its own, and comparing answers.

`make test` builds that venv once (`make compat-venv`: the oldest onnxruntime with a wheel for
this Python) and names its interpreter in FLAXDIGITS_COMPAT_PYTHON. Run bare, without it, the
test is skipped and says why.
"""

from __future__ import annotations

import os

import onnxruntime
import pytest

from flaxdigits.core import contract
from flaxdigits.export import compat
from flaxdigits.export.onnx_export import PARITY_TOLERANCE

COMPAT_PYTHON = os.environ.get("FLAXDIGITS_COMPAT_PYTHON", "")
COMPAT_ORT = os.environ.get("FLAXDIGITS_COMPAT_ORT", "")
# Argmax agreement of the int8 files between that runtime (1.15.0) and this one (1.32) on 500
# test images, a few points under what was measured (development machine, 2026-12-02: MLP 99.6%,
# CNN 100%): their QLinear kernels round differently, the float files agree exactly.
INT8_ARGMAX_FLOOR = 0.97

needs_other_runtime = pytest.mark.skipif(
    not COMPAT_PYTHON,
    reason="FLAXDIGITS_COMPAT_PYTHON unset: `make test` sets it (`make compat-venv` builds it)",
)


@needs_other_runtime
def test_exported_files_run_in_the_oldest_onnxruntime_with_the_same_answers(exported_models, mnist):
    images = contract.to_model_input(mnist.test_images[:500])
    paths = sorted(exported_models.glob("*.onnx"))
    names = {f"{n}{s}" for n in ("mlp", "cnn", "gate") for s in (".onnx", ".int8.onnx")}
    assert {p.name for p in paths} == names
    report = compat.check_with(COMPAT_PYTHON, paths, images)
    assert report["onnxruntime"] != onnxruntime.__version__  # two runtimes, really
    if COMPAT_ORT:
        assert report["onnxruntime"] == COMPAT_ORT
    for path in paths:
        result = report["files"][str(path)]
        assert result["loads"], f"{path.name}: {result}"
        if path.name.endswith(".int8.onnx"):
            assert result["argmax_agreement"] >= INT8_ARGMAX_FLOOR, f"{path.name}: {result}"
        else:
            assert result["max_abs_diff"] <= PARITY_TOLERANCE, f"{path.name}: {result}"
            assert result["argmax_agreement"] == 1.0, f"{path.name}: {result}"


@needs_other_runtime
def test_a_file_the_old_runtime_cannot_load_is_reported_not_raised(tmp_path, mnist):
    from tests.support.toy_onnx import toy_model

    model = toy_model()
    model.opset_import[0].version = 99  # no onnxruntime knows this opset
    path = tmp_path / "future.onnx"
    path.write_bytes(model.SerializeToString())
    report = compat.check_with(
        COMPAT_PYTHON, [path], contract.to_model_input(mnist.test_images[:2])
    )
    assert report["files"][str(path)]["loads"] is False
    assert "opset" in report["files"][str(path)]["error"].lower()
