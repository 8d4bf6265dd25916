"""Tiny hand-built ONNX models that obey (or, by parameter, break) the export contract, for tests
that need no training, and the helpers that write them with a manifest."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from unittest import mock

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data, set_external_data

from flaxdigits.core import contract
from flaxdigits.serve.runtime import predictor as predictor_module


def toy_model(
    *,
    name: str = "mlp",
    ink_digit: int = 3,
    input_name: str = contract.INPUT_NAME,
    input_shape=("N", 28, 28, 1),
    output_name: str = contract.OUTPUT_NAME,
    classes: int = 10,
    softmax: bool = True,
    metadata=None,
    weights=None,
) -> onnx.ModelProto:
    """Flatten -> Gemm (-> Softmax): `ink_digit` for any ink, 0 for a blank image.

    weights, a (weight (784, classes), bias (classes,)) pair, replace that rule by a linear
    classifier. metadata entries are added to (or override) the model name and preprocessing
    spec; a value of None removes that key.
    """
    if weights is None:
        kernel = np.zeros((784, classes), np.float32)
        kernel[:, ink_digit % classes] = 1.0  # its logit is the total ink
        bias = np.zeros(classes, np.float32)
        bias[0] = 2.0
    else:
        kernel, bias = (np.asarray(w, np.float32) for w in weights)
    nodes = [
        helper.make_node("Flatten", [input_name], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["z" if softmax else output_name]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], [output_name], axis=-1))
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(kernel, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    props = {contract.META_MODEL: name, contract.META_PREPROCESSING: contract.PREPROCESSING_SPEC}
    for key, value in (props | dict(metadata or {})).items():
        if value is not None:
            model.metadata_props.add(key=key, value=value)
    return model


def toy_model_bytes(**kwargs) -> bytes:
    """toy_model(**kwargs), serialized."""
    return toy_model(**kwargs).SerializeToString()


def write_model(directory: Path, model, name="mlp", manifest=True, **manifest_changes) -> Path:
    """NAME.onnx (+ a NAME.json manifest entry for exactly these bytes unless manifest=False);
    returns the model path. manifest_changes override fields of the entry."""
    path = directory / f"{name}.onnx"
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    path.write_bytes(data)
    if manifest:
        entry = {
            "file": path.name,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "test_accuracy": 0.5,
            "variant": "float32",
        }
        entry.update(manifest_changes)
        doc = {"schema": contract.MANIFEST_SCHEMA, "model": name, "files": [entry], "opset": 17}
        (directory / f"{name}.json").write_text(json.dumps(doc))
    return path


def external_model(location: str, directory: Path | None = None) -> onnx.ModelProto:
    """The toy model with its weights in external data at `location`.

    With a directory, every initializer is moved to directory/location, written there, so
    onnxruntime could load the model from that directory; without one, only the first
    initializer points at `location` (nothing is written).
    """
    model = toy_model()
    if directory is not None:
        convert_model_to_external_data(model, location=location, size_threshold=0)
        onnx.save_model(model, directory / "scratch.onnx")  # writes the external file
        return model
    weights = model.graph.initializer[0]
    set_external_data(weights, location=location, offset=0, length=3136)
    weights.ClearField("raw_data")
    return model


@contextlib.contextmanager
def no_parsers():
    """Any call of onnx.checker or onnxruntime fails the test: the model is refused before."""
    boom = AssertionError("a parser was reached")
    with (
        mock.patch.object(predictor_module, "_onnx_check", side_effect=boom),
        mock.patch.object(predictor_module, "_session", side_effect=boom),
    ):
        yield


# An answer rule as export/confidence.py writes one (contract.META_ANSWER_RULE), for toy models.
TOY_ANSWER_RULE = {
    "temperature": 1.0,
    "not_a_digit_below": 0.5,
    "not_sure_below": 0.8,
    "validation_rejected": 0.005,
}


def upright_stroke_weights(digit: int = 1, gain: float = 0.25):
    """Weights for toy_model that read `digit` from an upright stroke and nothing from the rest.

    The digit's logit is gain x (the ink in the middle six columns of the 28x28 input minus the
    ink outside them), every other logit 0: a "1" (preprocessing centres its ink there) is read
    at a confidence near 1, ink spread over the box (an "X", an "A") gets a flat answer, about
    1/10 each, which an answer rule calls "not a digit".
    """
    middle = np.zeros((28, 28), np.float32)
    middle[:, 11:17] = 1.0
    kernel = np.zeros((784, 10), np.float32)
    kernel[:, digit] = gain * (2.0 * middle - 1.0).reshape(784)
    return kernel, np.zeros(10, np.float32)


def write_gate(directory: Path, below: float = 0.5, weights=None) -> Path:
    """gate.onnx beside directory's mlp.onnx and cnn.onnx, with a gate.json manifest whose
    float32 drawing rule names those two files by sha256 (as export/drawing_rule.py fits one)
    and calls a drawing "not a digit" under `below`. The gate reads 1 from an upright stroke
    (upright_stroke_weights) unless weights say otherwise."""
    members = {
        name: hashlib.sha256((directory / f"{name}.onnx").read_bytes()).hexdigest()
        for name in contract.MODEL_NAMES
    }
    model = toy_model(name="cnn", weights=weights or upright_stroke_weights(1, 0.3))
    path = write_model(directory, model, name=contract.GATE_NAME)
    manifest = json.loads((directory / "gate.json").read_text())
    rule = {"members": members, "not_a_digit_below": below, "validation_rejected": 0.005}
    manifest["drawing_rule"] = {"float32": rule}
    (directory / "gate.json").write_text(json.dumps(manifest))
    return path
