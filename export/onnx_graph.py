"""ONNX graphs of our models: conversion (jax2onnx), static int8 quantization, normalization.

Every function here turns a model or a graph into a graph; nothing reads runs or data. The
graph is `softmax(model(image) / temperature)` (the temperature fitted at export: 1 leaves the
division out) with the trained parameters baked in as initializers, at opset OPSET and the
lowest IR version that opset allows, serialized as one file (no external data).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

import flaxdigits
from flaxdigits.core import contract

# Opset 13 is the lowest with every operator this graph uses in its current form (Softmax over
# one axis, Squeeze/Unsqueeze with axes inputs) and with per-axis QuantizeLinear for QDQ; it
# needs only IR 7. Higher opsets add nothing these models use and shut out older runtimes.
OPSET = 13
CALIBRATION_IMAGES = 1000  # evenly spaced over the training split (never validation or test)
QUANTIZATION = {
    "method": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "activations": "uint8, per tensor, MinMax",
    "weights": "int8, per tensor, symmetric",
    "op_types": ["Gemm", "MatMul"],
    "calibration_images": CALIBRATION_IMAGES,
}


class ExportError(ValueError):
    """A run cannot be exported where asked; the message says what was wrong and what to do."""


def to_onnx_model(model, name: str, temperature: float = 1.0) -> onnx.ModelProto:
    """The float32 graph `image` [N, 28, 28, 1] -> `probabilities` [N, 10] of an NNX model,
    its logits divided by the temperature before the softmax (none at 1)."""
    import jax
    from jax2onnx import to_onnx

    from flaxdigits.models import predict_proba

    # jax2onnx's own nnx.Conv/Linear rules broadcast biases implicitly; the strict setting
    # the tests run JAX under is for our code. Its '.value' deprecations are its own to fix.
    with (
        _quiet_logger("onnx_ir"),
        warnings.catch_warnings(),
        jax.numpy_rank_promotion("allow"),
    ):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="jax2onnx")
        proto = to_onnx(
            functools.partial(predict_proba, model, temperature=temperature),
            [contract.INPUT_SHAPE],
            model_name=f"flaxdigits_{name}",
            opset=OPSET,
            input_names=[contract.INPUT_NAME],
            output_names=[contract.OUTPUT_NAME],
        )
    return _normalize(_fold_weight_transposes(proto))


def _fold_weight_transposes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Bake `Transpose(initializer)` into the initializer (the conv kernel, HWIO -> OIHW).

    jax2onnx lowers lax.conv's HWIO kernel through a Transpose node on the constant, as it does
    for any layout change of a weight. onnxruntime would fold it at load time anyway; baking it
    keeps the file's graph to the computation itself.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for node in list(graph.node):
        if node.op_type != "Transpose" or node.input[0] not in inits or uses[node.input[0]] != 1:
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        src = inits.pop(node.input[0])
        baked = onnx.numpy_helper.from_array(
            np.ascontiguousarray(np.transpose(onnx.numpy_helper.to_array(src), perm)),
            name=node.output[0],
        )
        graph.initializer.remove(src)
        graph.initializer.append(baked)
        graph.node.remove(node)
    return model


def quantize_int8(float_bytes: bytes, calibration: np.ndarray) -> onnx.ModelProto:
    """Static QDQ int8 of a float graph's dense layers, calibrated on (K, 28, 28, 1) images.

    Measured on the default 5-epoch runs: dynamic quantization runs the CNN 2-3x slower
    (ConvInteger); quantizing its Conv too (288 weights, 0.05% of the CNN) made it slower than
    float at batch 1 and less accurate, since the 26x26x32 conv output is then requantized and
    dequantized around the float pooling. The softmax stays float, so probabilities keep their
    resolution. Weights are per tensor: per channel, onnxruntime splits Gemm weights along the
    input axis, which cost accuracy here.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(np.array_split(calibration, max(1, len(calibration) // 100)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {contract.INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="flaxdigits-int8-") as tmp:
        src, pre, dst = (os.path.join(tmp, f) for f in ("float.onnx", "pre.onnx", "int8.onnx"))
        Path(src).write_bytes(float_bytes)
        quant_pre_process(src, pre)
        quantize_static(
            pre,
            dst,
            Batches(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZATION["op_types"],
            per_channel=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        model = onnx.load_model(dst, load_external_data=False)
    return _normalize(model)


def _normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Pin everything that is not the computation: opsets in use, lowest IR, producer, names."""
    used = {node.domain for node in model.graph.node}
    kept = [o for o in model.opset_import if o.domain in used or o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    onset = {o.domain or "ai.onnx": o.version for o in kept}
    if onset.get("ai.onnx") != OPSET or len(onset) != 1:
        raise ExportError(f"the graph uses opsets {onset}, expected only ai.onnx {OPSET}")
    model.ir_version = onnx.helper.find_min_ir_version_for(list(kept))
    model.producer_name = "flaxdigits"
    model.producer_version = flaxdigits.__version__
    model.doc_string = "MNIST digit classifier: " + contract.INPUT_DESCRIPTION
    del model.metadata_props[:]
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise ExportError(f"initializer {tensor.name} has external data; cannot inline it")
    return model


def set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    del model.metadata_props[:]
    for key in sorted(metadata):
        model.metadata_props.add(key=key, value=metadata[key])


def serialize(model: onnx.ModelProto) -> bytes:
    """Check the model (full check, with shape inference) and return its bytes: one file."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0]
        raise ExportError(f"the exported graph is not valid ONNX: {first}") from None
    return model.SerializeToString(deterministic=True)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a library's warnings for a block (jax2onnx's 'value type ... not known')."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
