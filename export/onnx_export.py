"""A trained run -> self-contained ONNX files (float32, optional static int8) and their manifest.

NAME.onnx is `softmax(model(image))` with the trained parameters baked in as initializers, at
opset OPSET and the lowest IR version that opset allows, serialized by us as one file (no
external-data side file). NAME.int8.onnx is the same graph statically quantized to QDQ form,
calibrated on training images. NAME.json lists the files with sizes, sha256, test accuracy and
parity figures. Everything is measured before anything is written; each file is then written
atomically, so a failed export leaves no partial file behind.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import flaxdigits
from flaxdigits.atomic import write_bytes_atomic, write_json_atomic
from flaxdigits.serve import spec

# Opset 13 is the lowest with every operator this graph uses in its current form (Softmax over
# one axis, Squeeze/Unsqueeze with axes inputs) and with per-axis QuantizeLinear for QDQ; it
# needs only IR 7. Higher opsets add nothing these models use and shut out older runtimes.
OPSET = 13
# Oldest onnxruntime both files were loaded and run in (by hand, in throwaway venvs): 1.7.0,
# also 1.8.0 and 1.15.0; 1.6.0 runs the float file but has no DequantizeLinear-13 for int8;
# 1.5.2 refuses opset 13.
MIN_ONNXRUNTIME = "1.7.0"
CALIBRATION_IMAGES = 1000  # evenly spaced over the training split (never validation or test)
PARITY_TOLERANCE = 1e-5  # max |probability difference| between onnxruntime and JAX
INT8_MAX_ACCURACY_DROP = 0.002  # test accuracy the int8 file may lose against the float model
INT8_MAX_SIZE_RATIO = 0.30
EVAL_BATCH = 1000  # onnxruntime batch for the 10k-image checks (the JAX side uses its own default)
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


def export_run(run_dir: Path, out: Path, int8: bool = False) -> dict[str, Any]:
    """Export a trained run as NAME.onnx (+ NAME.int8.onnx) and write the NAME.json manifest.

    Args:
      run_dir: a run directory written by `flaxdigits train`.
      out: models/NAME.onnx; its directory is created if needed.
      int8: also write NAME.int8.onnx, statically quantized (QDQ) on training images.

    Returns:
      The manifest written to NAME.json: {"files": [{"file", "size", "sha256", "test_accuracy",
      "variant", "parity", ...}], "opset", "input", "output", ...}.

    Raises:
      CheckpointError: the run's checkpoint is missing, half-written, tampered or foreign.
      ExportError: a bad output path, or a graph that fails its parity or int8 accuracy gate.
    """
    from flaxdigits.data import load_mnist
    from flaxdigits.train import load_run

    out = _check_out(Path(out))
    run = load_run(Path(run_dir))
    mnist = load_mnist()
    test_images = float_images(mnist.test_images)
    reference = jax_evaluation(run.model, mnist.test_images, mnist.test_labels)
    accuracy = float(reference["accuracy"])
    metadata = model_metadata(run, accuracy)

    float_model = to_onnx_model(run.model, run.config.model)
    _set_metadata(float_model, metadata | {spec.META_VARIANT: "float32"})
    float_bytes = serialize(float_model)
    float_probs = onnxruntime_probabilities(float_bytes, test_images)
    float_parity = parity(float_probs, reference["probabilities"])
    if float_parity["max_abs_diff"] > PARITY_TOLERANCE:
        raise ExportError(
            f"{out.name}: onnxruntime differs from the JAX model by "
            f"{float_parity['max_abs_diff']:.2e} > {PARITY_TOLERANCE:g} in probability: "
            "the converter mistranslated the graph; report it with this run directory"
        )
    files = [_file_entry(out, float_bytes, "float32", float_probs, mnist.test_labels, float_parity)]
    blobs = {out: float_bytes}

    int8_out = out.with_name(out.name[: -len(".onnx")] + ".int8.onnx")
    if int8:
        n_val = int(round(len(mnist.train_images) * run.config.val_fraction))
        calibration = calibration_images(mnist.train_images[: len(mnist.train_images) - n_val])
        int8_model = quantize_int8(float_bytes, calibration)
        # Measured first (metadata does not change what the graph computes), so that the file
        # carries its own test accuracy, not the float model's.
        int8_probs = onnxruntime_probabilities(serialize(int8_model), test_images)
        int8_accuracy = float(np.mean(int8_probs.argmax(-1) == mnist.test_labels))
        _set_metadata(int8_model, model_metadata(run, int8_accuracy) | {spec.META_VARIANT: "int8"})
        int8_bytes = serialize(int8_model)
        entry = _file_entry(
            int8_out,
            int8_bytes,
            "int8",
            int8_probs,
            mnist.test_labels,
            parity(int8_probs, reference["probabilities"]),
        )
        _check_int8(entry, files[0])
        entry["size_ratio"] = round(entry["size"] / files[0]["size"], 4)
        entry["quantization"] = QUANTIZATION
        files.append(entry)
        blobs[int8_out] = int8_bytes

    manifest = build_manifest(run, accuracy, files)
    try:
        for path, data in blobs.items():
            write_bytes_atomic(path, data)
        if not int8:
            int8_out.unlink(missing_ok=True)  # a stale int8 file the new manifest does not list
        write_json_atomic(spec.manifest_path_for(str(out)), manifest)
    except OSError as e:
        raise ExportError(f"{out}: cannot write the export ({e.strerror or e})") from None
    return manifest


# ---------------------------------------------------------------------------------- the graph


def to_onnx_model(model, name: str) -> onnx.ModelProto:
    """The float32 graph `image` [N, 28, 28, 1] -> `probabilities` [N, 10] of an NNX model."""
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
            functools.partial(predict_proba, model),
            [spec.INPUT_SHAPE],
            model_name=f"flaxdigits_{name}",
            opset=OPSET,
            input_names=[spec.INPUT_NAME],
            output_names=[spec.OUTPUT_NAME],
        )
    return _normalize(_fold_weight_transposes(proto))


def _fold_weight_transposes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Bake `Transpose(initializer)` into the initializer (the conv kernel, HWIO -> OIHW).

    jax2onnx emits that Transpose when the conv kernel reaches lax.conv as a traced value, as it
    does through the CNN's custom-gradient conv+pool. onnxruntime would fold it at load time
    anyway; baking it keeps the file's graph to the computation itself.
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
            return None if batch is None else {spec.INPUT_NAME: batch}

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
    model.doc_string = "MNIST digit classifier: " + spec.INPUT_DESCRIPTION
    del model.metadata_props[:]
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise ExportError(f"initializer {tensor.name} has external data; cannot inline it")
    return model


def model_metadata(run, test_accuracy: float) -> dict[str, str]:
    """metadata_props (spec.META_*) of a run's exported files, all but the variant."""
    from flaxdigits.models import count_params

    config = run.config.to_dict()
    return {
        spec.META_MODEL: run.config.model,
        spec.META_PARAMS: str(count_params(run.model)),
        spec.META_TEST_ACCURACY: f"{test_accuracy:.4f}",
        spec.META_TRAIN_CONFIG: json.dumps(config, sort_keys=True),
        spec.META_PREPROCESSING: spec.PREPROCESSING_SPEC,
        spec.META_LABELS: json.dumps(list(spec.LABELS)),
        spec.META_INPUT: spec.INPUT_DESCRIPTION,
        spec.META_VERSION: flaxdigits.__version__,
        spec.META_JAX2ONNX_VERSION: importlib.metadata.version("jax2onnx"),
        spec.META_CHECKPOINT_SHA256: run.checkpoint_sha256,
    }


def _set_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
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


# ------------------------------------------------------------------------------- measurements


def float_images(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], the model input."""
    from flaxdigits.train import to_float

    return np.asarray(to_float(images))


def calibration_images(train_images: np.ndarray, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """n training images evenly spaced over the split, as float model input (deterministic)."""
    index = np.linspace(0, len(train_images) - 1, min(n, len(train_images))).astype(np.int64)
    return float_images(train_images[index])


def jax_evaluation(model, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The training code's own evaluation: accuracy and probabilities of the JAX model."""
    from flax import nnx

    from flaxdigits.train import evaluate_arrays

    graphdef, params = nnx.split(model, nnx.Param)
    return evaluate_arrays(graphdef, params, images, labels.astype(np.int32))


def session(model, threads: int = 1):
    """An onnxruntime CPU session (path or bytes) with a fixed thread count: repeatable."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    model = str(model) if isinstance(model, os.PathLike) else model
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def onnxruntime_probabilities(model, images: np.ndarray, batch_size: int = EVAL_BATCH):
    """Probabilities (N, 10) of an ONNX model (path, bytes or session) run in batches."""
    sess = model if hasattr(model, "run") else session(model)
    out = [
        sess.run([spec.OUTPUT_NAME], {spec.INPUT_NAME: images[i : i + batch_size]})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def parity(probs: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    """Max |difference| of probabilities and how many argmaxes differ from the reference."""
    diff = float(np.max(np.abs(probs.astype(np.float64) - reference))) if len(probs) else 0.0
    return {
        "against": "jax",
        "images": int(len(probs)),
        "max_abs_diff": diff,
        "argmax_mismatches": int(np.sum(probs.argmax(-1) != reference.argmax(-1))),
    }


def _file_entry(path: Path, data: bytes, variant: str, probs, labels, parity_: dict) -> dict:
    return {
        "file": path.name,
        "variant": variant,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "test_accuracy": float(np.mean(probs.argmax(-1) == labels)),
        "parity": parity_,
    }


def _check_int8(entry: dict, float_entry: dict) -> None:
    """The int8 file must be small and lose at most INT8_MAX_ACCURACY_DROP of test accuracy."""
    drop = float_entry["test_accuracy"] - entry["test_accuracy"]
    if drop > INT8_MAX_ACCURACY_DROP:
        raise ExportError(
            f"{entry['file']}: int8 test accuracy {entry['test_accuracy']:.4f} is "
            f"{100 * drop:.2f} points below the float model's: export without --int8"
        )
    if entry["size"] > INT8_MAX_SIZE_RATIO * float_entry["size"]:
        raise ExportError(
            f"{entry['file']}: {entry['size']} bytes is over {INT8_MAX_SIZE_RATIO:.0%} of the "
            "float file: the quantizer left weights in float; export without --int8"
        )


def build_manifest(run, test_accuracy: float, files: list[dict]) -> dict[str, Any]:
    """The NAME.json manifest: what the files are, how they were made and what they scored."""
    import onnxruntime

    from flaxdigits.models import count_params

    return {
        "schema": spec.MANIFEST_SCHEMA,
        "model": run.config.model,
        "params": count_params(run.model),
        "test_accuracy": test_accuracy,
        "train_config": run.config.to_dict(),
        "checkpoint_sha256": run.checkpoint_sha256,
        "opset": OPSET,
        "ir_version": onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", OPSET)]),
        "min_onnxruntime": MIN_ONNXRUNTIME,
        "input": {
            "name": spec.INPUT_NAME,
            "dtype": "float32",
            "shape": list(spec.INPUT_SHAPE),
            "layout": "NHWC",
            "range": [0.0, 1.0],
            "description": spec.INPUT_DESCRIPTION,
        },
        "output": {
            "name": spec.OUTPUT_NAME,
            "dtype": "float32",
            "shape": [spec.INPUT_SHAPE[0], len(spec.LABELS)],
            "labels": list(spec.LABELS),
            "meaning": "softmax probabilities, in the graph",
        },
        "preprocessing": spec.PREPROCESSING_SPEC,
        "parity_tolerance": PARITY_TOLERANCE,
        "versions": {
            "flaxdigits": flaxdigits.__version__,
            "jax2onnx": importlib.metadata.version("jax2onnx"),
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "files": files,
    }


# ------------------------------------------------------------------------------------ helpers


def _check_out(out: Path) -> Path:
    """Refuse an output path we cannot write, before any slow work and without creating dirs."""
    if not out.name.endswith(".onnx") or out.name.endswith(".int8.onnx") or out.name == ".onnx":
        raise ExportError(
            f"{out}: --out must name NAME.onnx (NAME.int8.onnx is written beside it with --int8)"
        )
    if out.is_dir():
        raise ExportError(f"{out} is a directory: give a file path such as {out / 'cnn.onnx'}")
    existing = next(p for p in (out.parent, *out.parent.parents) if p.exists())
    if not existing.is_dir():
        raise ExportError(f"{out}: {existing} is not a directory: choose another --out")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ExportError(
            f"{out}: cannot write in {existing} ({e.strerror or e}): choose another --out"
        ) from None
    return out


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
