"""The gate's drawing rule (contract.DRAWING_RULE_KEYS), fitted at its export on the validation
digits with the served models exported beside it.

A gate run (recipe "gate") is exported as GATE_NAME.onnx into the folder that holds mlp.onnx and
cnn.onnx (and their int8 files): for each variant written, the served files of that variant are
loaded as the page loads them (checked against their manifests), run with the gate on the
validation digits, and the drawing's score (contract.drawing_scores) under which
contract.NOT_A_DIGIT_VALIDATION_SHARE of them fall becomes the variant's threshold. The rule
names each member by its sha256: re-exporting mlp or cnn makes it stale, and the serve side
refuses a stale rule rather than apply it to other files. The test set is never used here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flaxdigits.core import contract
from flaxdigits.evaluation import calibration
from flaxdigits.export.onnx_graph import ExportError
from flaxdigits.serve.runtime.predictor import ModelLoadError, Predictor


def check_gate_out(recipe: str, out: Path) -> None:
    """A gate run is exported as GATE_NAME.onnx, and only a gate run is: the serve side finds
    the gate by its file name."""
    is_gate_file = out.name == f"{contract.GATE_NAME}.onnx"
    if (recipe == contract.GATE_NAME) != is_gate_file:
        raise ExportError(
            f"{out}: a run of the {recipe} recipe is exported as "
            + (
                f"{contract.GATE_NAME}.onnx beside mlp.onnx and cnn.onnx"
                if recipe == contract.GATE_NAME
                else f"NAME.onnx, not {out.name} (that name is the gate's)"
            )
        )


def member_files(folder: Path, variant: str) -> dict[str, Path]:
    """{model name: file} of the served models of one variant in the gate's folder."""
    files = {name: folder / contract.model_file(name, variant) for name in contract.MODEL_NAMES}
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        raise ExportError(
            f"{folder}: the gate's drawing rule is fitted with the served models: export "
            f"{', '.join(missing)} first (make export does it in that order)"
        )
    return files


def fit_drawing_rule(folder: Path, variant: str, gate, val_inputs, test_inputs) -> dict:
    """The drawing rule of one variant, fitted with the gate's calibrated probabilities
    `gate(inputs)` -> (N, 10) and those of the served files of that variant in `folder` on the
    validation digits, and the share of the test digits it rejects (measured, never fitted):
    {"rule": contract.DRAWING_RULE_KEYS, "test_rejected": share}."""
    if len(val_inputs) == 0:
        raise ExportError(
            "the gate's drawing rule is fitted on the validation digits: train the gate with a "
            "validation split (--val-fraction above 0)"
        )
    members, val, test = {}, [], []
    for name, path in member_files(folder, variant).items():
        try:
            predictor = Predictor(path)
        except ModelLoadError as e:
            raise ExportError(f"cannot fit the gate's drawing rule: {e}") from None
        members[name] = predictor.sha256
        val.append(predictor.predict_batch(val_inputs))
        test.append(predictor.predict_batch(test_inputs))
    gate_val, gate_test = gate(val_inputs), gate(test_inputs)
    scores = contract.drawing_scores(val, gate_val)
    below = round(calibration.threshold_for(scores, contract.NOT_A_DIGIT_VALIDATION_SHARE), 6)
    rule = {
        "members": members,
        "not_a_digit_below": below,
        "validation_rejected": round(float(np.mean(scores < below)), 6),
    }
    rejected = float(np.mean(contract.drawing_scores(test, gate_test) < below))
    return {"rule": contract.check_drawing_rule(rule), "test_rejected": round(rejected, 6)}


def check_int8(fitted: dict, max_rise: float) -> None:
    """The int8 files' drawing rule may reject at most max_rise more of the test digits than
    the float files' (export's gate on int8 files, for the drawing's answer)."""
    if "int8" not in fitted:
        return
    rise = fitted["int8"]["test_rejected"] - fitted["float32"]["test_rejected"]
    if rise > max_rise:
        raise ExportError(
            f"the int8 files' drawing rule rejects {100 * rise:.2f} points more of the test "
            f"digits than the float files' (at most {100 * max_rise:.2f}): export without --int8"
        )
