"""A finished run -> self-contained ONNX files (float32, optional static int8) and their manifest.

NAME.onnx is the run's model as one ONNX graph (export/onnx_graph.py); NAME.int8.onnx the same
graph statically quantized to QDQ form, calibrated on training images. NAME.json lists the files
with sizes, sha256, test accuracy and parity figures. Everything is measured before anything is
written; each file is then written atomically, so a failed export leaves no partial file behind.
The run comes through flaxdigits.runs only: export never reaches into training.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import flaxdigits
from flaxdigits.core import contract
from flaxdigits.core.atomic import write_bytes_atomic, write_json_atomic
from flaxdigits.data.mnist import load_mnist
from flaxdigits.export import confidence, drawing_rule
from flaxdigits.export.onnx_graph import (
    CALIBRATION_IMAGES,
    OPSET,
    QUANTIZATION,
    ExportError,
    quantize_int8,
    serialize,
    set_metadata,
    to_onnx_model,
)
from flaxdigits.runs import Run, load_run
from flaxdigits.serve.runtime import session as onnxrt

# Oldest onnxruntime both files were loaded and run in (by hand, in throwaway venvs): 1.7.0,
# also 1.8.0 and 1.15.0; 1.6.0 runs the float file but has no DequantizeLinear-13 for int8;
# 1.5.2 refuses opset 13.
MIN_ONNXRUNTIME = "1.7.0"
PARITY_TOLERANCE = 1e-5  # max |probability difference| between onnxruntime and JAX
INT8_MAX_ACCURACY_DROP = 0.002  # test accuracy the int8 file may lose against the float model
INT8_MAX_SIZE_RATIO = 0.30
# Test digits the int8 file may answer "not a digit" beyond the float file's share.
INT8_MAX_REJECTION_RISE = 0.005
EVAL_BATCH = 1000  # onnxruntime batch for the 10k-image checks (the JAX side uses its own)

__all__ = ["ExportError", "export_run"]


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
    out = _check_out(Path(out))
    run = load_run(Path(run_dir))
    drawing_rule.check_gate_out(run.config.recipe, out)
    mnist = load_mnist()
    split = run.split(mnist)
    rule = confidence.fit_rule(run, split)
    reference = run.evaluate(split.test_images, split.test_labels)
    test = _TestSet(split.test_images, split.test_labels, reference, rule)
    float_bytes, float_entry = _float_file(run, out, test)
    files, blobs = [float_entry], {out: float_bytes}
    int8_out = out.with_name(out.name[: -len(".onnx")] + ".int8.onnx")
    if int8:
        int8_bytes, int8_entry = _int8_file(run, int8_out, float_bytes, split.train_images, test)
        _check_int8(int8_entry, float_entry)
        int8_entry["size_ratio"] = round(int8_entry["size"] / float_entry["size"], 4)
        int8_entry["quantization"] = QUANTIZATION
        files.append(int8_entry)
        blobs[int8_out] = int8_bytes
    manifest = build_manifest(run, test.accuracy, files) | {"answer_rule": rule}
    if run.config.recipe == contract.GATE_NAME:
        val = contract.to_model_input(split.val_images)
        fitted = {
            entry["variant"]: drawing_rule.fit_drawing_rule(
                out.parent,
                entry["variant"],
                lambda x, blob=blob: onnxruntime_probabilities(blob, x),
                val,
                test.inputs,
            )
            for entry, blob in zip(files, blobs.values(), strict=True)
        }
        drawing_rule.check_int8(fitted, INT8_MAX_REJECTION_RISE)
        manifest["drawing_rule"] = {v: f["rule"] for v, f in fitted.items()}
        manifest["drawing_rule_test_rejected"] = {v: f["test_rejected"] for v, f in fitted.items()}
    try:
        for path, blob in blobs.items():
            write_bytes_atomic(path, blob)
        if not int8:
            int8_out.unlink(missing_ok=True)  # a stale int8 file the new manifest does not list
        write_json_atomic(contract.manifest_path_for(str(out)), manifest)
    except OSError as e:
        raise ExportError(f"{out}: cannot write the export ({e.strerror or e})") from None
    return manifest


class _TestSet:
    """The 10k test images as model input, their labels, the JAX model's evaluation, and the
    answer rule the files carry (its temperature applied to the reference probabilities)."""

    def __init__(self, images, labels, reference: dict[str, Any], rule: dict | None):
        self.inputs = contract.to_model_input(images)
        self.labels = labels
        self.rule = rule
        self.temperature = rule["temperature"] if rule else 1.0
        self.reference = _tempered(reference["probabilities"], self.temperature)
        self.accuracy = float(reference["accuracy"])
        self.uncalibrated_ece = confidence.measured(reference["probabilities"], labels, None)["ece"]


def _tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / T) from softmax(logits) = p ** (1 / T), renormalised (float64). Exact but
    for probabilities that underflowed to 0 in float32, which stay 0: under 1e-30 either way at
    the temperatures fitted here, far below the parity tolerance."""
    if temperature == 1.0:
        return probabilities
    p = np.asarray(probabilities, np.float64) ** (1.0 / temperature)
    return p / p.sum(-1, keepdims=True)


def _float_file(run: Run, out: Path, test: _TestSet) -> tuple[bytes, dict]:
    """The float32 file's bytes and manifest entry, after the parity gate against JAX."""
    model = to_onnx_model(run.model, run.config.model, test.temperature)
    metadata = model_metadata(run, test.accuracy, test.rule)
    set_metadata(model, metadata | {contract.META_VARIANT: "float32"})
    blob = serialize(model)
    probs = onnxruntime_probabilities(blob, test.inputs)
    agreement = parity(probs, test.reference)
    if agreement["max_abs_diff"] > PARITY_TOLERANCE:
        raise ExportError(
            f"{out.name}: onnxruntime differs from the JAX model by "
            f"{agreement['max_abs_diff']:.2e} > {PARITY_TOLERANCE:g} in probability: "
            "the converter mistranslated the graph; report it with this run directory"
        )
    entry = _file_entry(out, blob, "float32", probs, test.labels, agreement)
    entry["answers"] = confidence.measured(probs, test.labels, test.rule)
    entry["answers"]["ece_before_calibration"] = test.uncalibrated_ece
    return blob, entry


def _int8_file(run: Run, out: Path, float_bytes: bytes, train_images, test: _TestSet):
    """The int8 file's bytes and manifest entry (its own accuracy measured before writing)."""
    model = quantize_int8(float_bytes, calibration_images(train_images))
    # Measured first (metadata does not change what the graph computes), so that the file
    # carries its own test accuracy, not the float model's.
    probs = onnxruntime_probabilities(serialize(model), test.inputs)
    accuracy = float(np.mean(probs.argmax(-1) == test.labels))
    metadata = model_metadata(run, accuracy, test.rule)
    set_metadata(model, metadata | {contract.META_VARIANT: "int8"})
    blob = serialize(model)
    entry = _file_entry(out, blob, "int8", probs, test.labels, parity(probs, test.reference))
    entry["answers"] = confidence.measured(probs, test.labels, test.rule)
    return blob, entry


def model_metadata(run, test_accuracy: float, rule: dict | None = None) -> dict[str, str]:
    """metadata_props (contract.META_*) of a run's exported files, all but the variant; the
    answer rule where the run has one."""
    config = run.config.to_dict()
    extra = {contract.META_ANSWER_RULE: json.dumps(rule, sort_keys=True)} if rule else {}
    return extra | {
        contract.META_MODEL: run.config.model,
        contract.META_PARAMS: str(run.params),
        contract.META_TEST_ACCURACY: f"{test_accuracy:.4f}",
        contract.META_TRAIN_CONFIG: json.dumps(config, sort_keys=True),
        contract.META_RECIPE: run.config.recipe,
        contract.META_PRECISION: run.config.precision,
        contract.META_PREPROCESSING: contract.PREPROCESSING_SPEC,
        contract.META_LABELS: json.dumps(list(contract.LABELS)),
        contract.META_INPUT: contract.INPUT_DESCRIPTION,
        contract.META_VERSION: flaxdigits.__version__,
        contract.META_JAX2ONNX_VERSION: importlib.metadata.version("jax2onnx"),
        contract.META_CHECKPOINT_STATE_SHA256: run.checkpoint_state_sha256,
    }


# ------------------------------------------------------------------------------- measurements


def calibration_images(train_images: np.ndarray, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """n training images evenly spaced over the split, as float model input (deterministic)."""
    index = np.linspace(0, len(train_images) - 1, min(n, len(train_images))).astype(np.int64)
    return contract.to_model_input(train_images[index])


def onnxruntime_probabilities(model, images: np.ndarray, batch_size: int = EVAL_BATCH):
    """Probabilities (N, 10) of an ONNX model (path, bytes or session) run in batches."""
    sess = model if hasattr(model, "run") else onnxrt.session(model)
    out = [
        sess.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images[i : i + batch_size]})[0]
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
    """The int8 file must be small, lose at most INT8_MAX_ACCURACY_DROP of test accuracy and
    answer "not a digit" to at most INT8_MAX_REJECTION_RISE more of the test digits."""
    drop = float_entry["test_accuracy"] - entry["test_accuracy"]
    if drop > INT8_MAX_ACCURACY_DROP:
        raise ExportError(
            f"{entry['file']}: int8 test accuracy {entry['test_accuracy']:.4f} is "
            f"{100 * drop:.2f} points below the float model's: export without --int8"
        )
    rise = entry["answers"]["not_a_digit"] - float_entry["answers"]["not_a_digit"]
    if rise > INT8_MAX_REJECTION_RISE:
        raise ExportError(
            f"{entry['file']}: int8 answers 'not a digit' to {100 * rise:.2f} points more of the "
            "test digits than the float model: export without --int8"
        )
    if entry["size"] > INT8_MAX_SIZE_RATIO * float_entry["size"]:
        raise ExportError(
            f"{entry['file']}: {entry['size']} bytes is over {INT8_MAX_SIZE_RATIO:.0%} of the "
            "float file: the quantizer left weights in float; export without --int8"
        )


def build_manifest(run, test_accuracy: float, files: list[dict]) -> dict[str, Any]:
    """The NAME.json manifest: what the files are, how they were made and what they scored."""
    import onnxruntime

    return {
        "schema": contract.MANIFEST_SCHEMA,
        "model": run.config.model,
        "params": run.params,
        "test_accuracy": test_accuracy,
        "train_config": run.config.to_dict(),
        "recipe": run.config.recipe_values.to_dict() | {"name": run.config.recipe},
        "training_precision": run.config.precision,
        "checkpoint_state_sha256": run.checkpoint_state_sha256,
        "opset": OPSET,
        "ir_version": onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", OPSET)]),
        "min_onnxruntime": MIN_ONNXRUNTIME,
        "input": {
            "name": contract.INPUT_NAME,
            "dtype": "float32",
            "shape": list(contract.INPUT_SHAPE),
            "layout": "NHWC",
            "range": [0.0, 1.0],
            "description": contract.INPUT_DESCRIPTION,
        },
        "output": {
            "name": contract.OUTPUT_NAME,
            "dtype": "float32",
            "shape": [contract.INPUT_SHAPE[0], len(contract.LABELS)],
            "labels": list(contract.LABELS),
            "meaning": "softmax probabilities, in the graph, the logits divided by "
            "answer_rule.temperature first (calibration)",
        },
        "preprocessing": contract.PREPROCESSING_SPEC,
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
