"""Running exported files in another interpreter's onnxruntime and comparing the answers."""

from __future__ import annotations

import sys

import onnxruntime

from flaxdigits import contract
from flaxdigits.export import compat


def test_compat_check_runs_files_in_another_interpreter(exported_models, mnist):
    test_images = contract.to_model_input(mnist.test_images[:50])
    paths = [exported_models / "mlp.onnx", exported_models / "mlp.int8.onnx"]
    report = compat.check_with(sys.executable, paths, test_images[:50])
    assert report["onnxruntime"] == onnxruntime.__version__
    for path in paths:
        assert report["files"][str(path)] == {
            "loads": True,
            "max_abs_diff": 0.0,
            "argmax_agreement": 1.0,
        }
