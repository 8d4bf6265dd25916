"""The external-data check: the wire walk finds every reference, and refuses protobuf bombs and
foreign files, all before onnx.checker or onnxruntime parse a byte (toy_onnx.no_parsers)."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from flaxdigits.serve.runtime.onnx_wire import WireError, external_data_refs
from flaxdigits.serve.runtime.predictor import ModelLoadError, Predictor
from tests.support.strategies import CORPUS
from tests.support.toy_onnx import (
    external_model,
    no_parsers,
    toy_model,
    toy_model_bytes,
    write_model,
)

GOOD_MODEL = toy_model_bytes()


def test_a_self_contained_model_has_no_references():
    assert external_data_refs(GOOD_MODEL) == set()
    with pytest.raises(WireError, match="truncated or malformed"):
        external_data_refs(GOOD_MODEL[:-1])


def test_external_data_is_refused_before_any_parser_even_with_a_true_manifest(tmp_path):
    located = external_model("../../../etc/passwd")
    bare = onnx.load_model_from_string(GOOD_MODEL)
    bare.graph.initializer[0].data_location = TensorProto.EXTERNAL  # no location entry at all
    bare.graph.initializer[0].ClearField("raw_data")
    for model, match in [(located, "etc/passwd"), (bare, "data_location=EXTERNAL")]:
        path = write_model(tmp_path, model.SerializeToString())  # a manifest that agrees
        with no_parsers(), pytest.raises(ModelLoadError, match=f"external data.*{match}"):
            Predictor(path)


@pytest.mark.parametrize("hide_onnx", [False, True], ids=["with onnx", "without onnx"])
def test_external_data_is_refused(tmp_path, monkeypatch, hide_onnx):
    model = external_model("weights.bin", tmp_path)
    path = write_model(tmp_path, model)
    monkeypatch.chdir(tmp_path)  # onnxruntime would resolve weights.bin against the cwd
    if hide_onnx:
        monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(ModelLoadError, match=r"external data \(weights.bin\)"):
        Predictor(path)


def test_external_data_in_a_nested_subgraph_is_found(tmp_path, monkeypatch):
    tensor = numpy_helper.from_array(np.ones(10, np.float32), "hidden")
    set_external_data(tensor, location="../../etc/passwd")
    tensor.ClearField("raw_data")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=tensor)],
        "branch",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [10])],
    )
    model = toy_model()
    model.graph.node.append(
        helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch)
    )
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModelLoadError, match="etc/passwd"):
        Predictor(write_model(tmp_path, model))


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def nested_graphs(depth: int) -> bytes:
    """ModelProto.graph -> node -> attribute.g -> node -> ... `depth` graphs deep."""
    msg = b""
    for _ in range(depth):
        graph = b"\x0a" + varint(len(msg)) + msg if msg else b""  # Graph.node (1): Node
        attribute = b"\x32" + varint(len(graph)) + graph  # Attribute.g (6): Graph
        msg = b"\x2a" + varint(len(attribute)) + attribute  # Node.attribute (5)
    graph = b"\x0a" + varint(len(msg)) + msg
    return b"\x3a" + varint(len(graph)) + graph  # Model.graph (7)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (nested_graphs(100), "nesting too deep"),
        (nested_graphs(20_000), "nesting too deep"),
        (b"\x3a" + varint(2**62) + b"\x00" * 16, "truncated or malformed"),
        (b"\x3a" + b"\xff" * 11, "truncated or malformed"),
        (b"\x3b" + b"\x00" * 8, "wire type 3"),
        (b"\x08" + b"\x80" * 4, "truncated or malformed"),
        ((CORPUS / "digit.png").read_bytes(), "not a valid ONNX"),
        (b"PK\x03\x04" + b"\x00" * 60, "not a valid ONNX"),  # a zip (a PyTorch .pt)
        (b"\x80\x04\x95" + b"\x00" * 30, "not a valid ONNX"),  # a pickle's first bytes
        (b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40, "not a valid ONNX"),  # a TFLite flatbuffer
    ],
    ids=[
        "100 graphs deep",
        "20000 graphs deep",
        "length 2^62",
        "11-byte varint",
        "group wire type",
        "cut varint",
        "PNG",
        "zip",
        "pickle",
        "TFLite",
    ],
)
def test_protobuf_bombs_and_foreign_files_are_refused_by_the_wire_walk(tmp_path, data, match):
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    with no_parsers(), pytest.raises(ModelLoadError, match=match):
        Predictor(path, manifest=None)
