"""A tiny hand-built ONNX model that obeys the export contract, for tests that need no training."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from flaxdigits.serve import spec


def toy_model_bytes(*, name: str = "mlp", ink_digit: int = 3, metadata=None) -> bytes:
    """Flatten -> Gemm -> Softmax: `ink_digit` for any ink, 0 for a blank image.

    metadata entries are added to (or override) the model name and preprocessing spec.
    """
    weights = np.zeros((784, 10), np.float32)
    weights[:, ink_digit] = 1.0  # its logit is the total ink
    bias = np.zeros(10, np.float32)
    bias[0] = 2.0
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [spec.INPUT_NAME], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "b"], ["z"]),
            helper.make_node("Softmax", ["z"], [spec.OUTPUT_NAME], axis=-1),
        ],
        "toy",
        [helper.make_tensor_value_info(spec.INPUT_NAME, TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info(spec.OUTPUT_NAME, TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    props = {spec.META_MODEL: name, spec.META_PREPROCESSING: spec.PREPROCESSING_SPEC}
    for key, value in (props | dict(metadata or {})).items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()
