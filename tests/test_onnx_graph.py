"""The ONNX graph of a model: converted with parity, weight transposes baked, opset pinned."""

from __future__ import annotations

import numpy as np
import onnx

from flaxdigits.core import contract
from flaxdigits.export import onnx_export, onnx_graph
from flaxdigits.models import count_params, create_model, predict_proba

PARAMS = {"mlp": 101_770, "cnn": 542_230}


def test_untrained_parameters_export_with_parity_too(mnist):
    test_images = contract.to_model_input(mnist.test_images[:64])
    model = create_model("cnn", seed=3)
    data = onnx_graph.serialize(onnx_graph.to_onnx_model(model, "cnn"))
    probs = onnx_export.onnxruntime_probabilities(data, test_images[:64])
    reference = np.asarray(predict_proba(model, test_images[:64]))
    assert count_params(model) == PARAMS["cnn"]
    assert np.max(np.abs(probs - reference)) <= onnx_export.PARITY_TOLERANCE


def test_cnn_graph_is_the_computation_only_with_the_conv_kernel_baked_as_oihw():
    model = onnx.load_model_from_string(
        onnx_graph.serialize(onnx_graph.to_onnx_model(create_model("cnn"), "cnn"))
    )
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 1 and ops[-1] == "Softmax"
    inits = {t.name: t for t in model.graph.initializer}
    # Transposes of activations (NHWC <-> NCHW around the Conv) stay; none of a weight.
    assert not [n for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in inits]
    (conv,) = [n for n in model.graph.node if n.op_type == "Conv"]
    assert tuple(inits[conv.input[1]].dims) == (32, 1, 3, 3)  # OIHW
    assert [(o.domain, o.version) for o in model.opset_import] == [("", onnx_graph.OPSET)]
