"""The report's section on calibration and "not a digit": tables and figures from a small
answers.json, the rejection of real digits from the canvas and robustness reports, quoted only
where a report names its bytes, and the command when a measurement is missing."""

from __future__ import annotations

import hashlib
import json

import pytest

from flaxdigits.report import answers as report_answers
from flaxdigits.report import robustness as report_robust
from tests.test_report_robust import GRID, model

RULE = {
    "temperature": 1.25,
    "not_a_digit_below": 0.4,
    "not_sure_below": 0.8,
    "validation_rejected": 0.005,
}


def _bins(accuracy: float, confidence: float) -> list[dict]:
    empty = {"low": 0.0, "high": 0.5, "count": 0, "accuracy": None, "confidence": None}
    full = {"low": 0.5, "high": 1.0, "count": 90, "accuracy": accuracy, "confidence": confidence}
    return [empty, full]


def _entry(file: str, rule: dict | None, ece: float, auroc: float) -> dict:
    return {
        "file": file,
        "sha256": hashlib.sha256(file.encode()).hexdigest(),
        "answer_rule": rule,
        "test": {
            "accuracy": 0.99,
            "ece_before": 0.0321,
            "ece": ece,
            "not_a_digit": 0.0042,
            "not_sure": 0.0113,
        },
        "reliability": {"before": _bins(0.95, 0.99), "after": _bins(0.95, 0.96)},
        "auroc": {"all": auroc, "doodle": 0.9912, "font": 0.9634},
        "caught": {"all": 0.871, "doodle": 0.95, "font": 0.8},
        "passed": [0, 2, 2, 1],  # indices into heldout_names
    }


@pytest.fixture
def reports(tmp_path):
    answers = {
        "schema": "flaxdigits.answers.v1",
        "test_digits": 90,
        "heldout": {"count": 30, "kinds": {"doodle": 10, "font": 20}},
        "heldout_names": ["spiral", "A", "house"],
        "models": {
            "mlp.onnx": _entry("mlp.onnx", RULE, 0.0087, 0.9876),
            "cnn.onnx": _entry("cnn.onnx", RULE, 0.0061, 0.9953),
            "original/cnn.onnx": _entry("original/cnn.onnx", None, 0.0321, 0.7),
        },
        "table": "ANSWERS TABLE",
    }
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    (tmp_path / "answers_passed.png").write_bytes(b"\x89PNG picture")
    robust = model("robust", [0.9, 0.97, 0.99, 0.95, 0.8], [0.1, 0.96, 0.99, 0.98])
    robust["not_a_digit_28x28"] = 0.004
    robust["not_a_digit"] = {
        "rotation": [0.05, 0.02, 0.004, 0.01, 0.03],
        "slant": [0.01, 0.004, 0.02],
        "thickness": [0.9, 0.06, 0.004, 0.008],  # -1 px vanishes: not the worst level
    }
    original = model("original", [0.4, 0.8, 0.99, 0.7, 0.5], [0.1, 0.9, 0.99, 0.9])
    original |= {"not_a_digit_28x28": None, "not_a_digit": {}}
    robustness = {
        "schema": "flaxdigits.robustness.v1",
        "n": 100,
        "grid": GRID,
        "models": {"cnn/robust/float32": robust, "cnn/original/float32": original},
        "table": "FULL TABLE",
    }
    (tmp_path / "robustness.json").write_text(json.dumps(robustness))
    canvas = {
        "n": 50,
        "models": {"cnn": "models/cnn.onnx"},
        "sha256": {"cnn": "c" * 64},
        "accuracy": {"cnn": {"mnist": 0.98}},
        "not_a_digit": {"cnn": {"mnist": 0.0123, "bbox": 0.2}},
        "table": "CANVAS TABLE",
    }
    (tmp_path / "canvas_accuracy.json").write_text(json.dumps(canvas))
    return tmp_path


def _section(out) -> str:
    measurements = report_robust.read_measurements(out)
    measurements[report_answers.ANSWERS_FILE] = report_answers.read(out)
    return "\n".join(report_answers.sections(measurements, out))


def test_the_section_holds_the_tables_the_figures_and_the_bytes(reports):
    text = _section(reports)
    assert "## Confidence and 'not a digit'" in text
    assert "| mlp.onnx | 1.250 | 3.21% → 0.87% | 0.42% | 1.13% | 87.1% | 0.9876 |" in text
    assert "| original/cnn.onnx | none | 3.21% → 3.21% |" in text
    assert "| cnn.onnx | 0.9912 | 0.9634 | 95.0% | 80.0% |" in text  # per held-out kind
    assert "30 held-out non-digits (doodle 10, font 20" in text
    assert "![answers_reliability.png](answers_reliability.png)" in text
    assert (reports / "answers_reliability.png").read_bytes().startswith(b"\x89PNG")
    assert "![answers_passed.png](answers_passed.png)" in text
    assert "cnn.onnx answers 4 as a digit or 'not sure' (13.3%)" in text
    assert "most often: house (2), spiral (1), A (1)" in text
    cnn = hashlib.sha256(b"cnn.onnx").hexdigest()
    assert f"cnn.onnx `{cnn[:16]}…`" in text
    # Real digits rejected elsewhere: the canvases (`mnist`) and the distorted grid.
    assert "| cnn (robust) | 1.23% |" in text
    # clean, ±30° and ±45° averaged, slant ±0.3, -0.5 px, +2.5 px; worst without -1 px
    assert "| cnn/robust/float32 | 0.40% | 1.50% | 4.00% | 1.50% | 6.00% | 0.80% |" in text
    assert "| 6.00% (thickness -0.5 px) |" in text
    assert "| cnn/original/float32 | no answer rule | n/a |" in text
    measured = report_answers.measured_files(
        report_robust.read_measurements(reports)
        | {report_answers.ANSWERS_FILE: report_answers.read(reports)}
    )
    assert measured["answers.json"]["cnn.onnx"] == cnn
    assert set(measured) == {"answers.json", "robustness.json", "canvas_accuracy.json"}


def test_answers_that_name_no_bytes_are_quoted_for_nothing(reports):
    answers = json.loads((reports / "answers.json").read_text())
    del answers["models"]["mlp.onnx"]["sha256"]
    (reports / "answers.json").write_text(json.dumps(answers))
    text = _section(reports)
    assert "0.9876" not in text and "answers_reliability.png" not in text
    assert "answers.json names no model bytes" in text
    assert "re-run `flaxdigits answers" in text and "(`make answers`)" in text


def test_a_missing_measurement_names_the_command(tmp_path):
    text = _section(tmp_path)
    assert "## Confidence and 'not a digit'" in text
    assert (
        "No measurement yet: `flaxdigits answers --models models models/original --out "
        "reports/answers.json` (`make answers`)." in text
    )
    assert "(`make canvas-eval`)" in text and "(`make robustness`)" in text
    assert not list(tmp_path.glob("*.png"))


def test_reports_from_before_rejections_were_counted_say_so(reports):
    robustness = json.loads((reports / "robustness.json").read_text())
    for entry in robustness["models"].values():
        del entry["not_a_digit_28x28"], entry["not_a_digit"]
    (reports / "robustness.json").write_text(json.dumps(robustness))
    canvas = json.loads((reports / "canvas_accuracy.json").read_text())
    del canvas["not_a_digit"]
    (reports / "canvas_accuracy.json").write_text(json.dumps(canvas))
    text = _section(reports)
    assert "| cnn (robust) | not counted (an older report: re-run it) |" in text
    assert "| cnn/robust/float32 | not counted (an older report: re-run it) | n/a |" in text
    assert "no answer rule" not in text


def _drawing(variant: str, below: float, auroc: float) -> dict:
    """answers.json's entry of a gate file's drawing rule, as `flaxdigits answers` writes it."""
    rule = {"members": {"mlp": "a" * 64, "cnn": "b" * 64}, "not_a_digit_below": below}
    suffix = ".onnx" if variant == "float32" else ".int8.onnx"
    return {
        "variant": variant,
        "files": {n: f"{n}{suffix}" for n in ("mlp", "cnn", "gate")},
        "sha256": {"mlp": "a" * 64, "cnn": "b" * 64, "gate": "c" * 64},
        "rule": rule | {"validation_rejected": 0.005},
        "test": {"not_a_digit": 0.0058},
        "canvas": {"not_a_digit": 0.0095},
        "auroc": {"all": auroc, "doodle": 0.9987, "font": 0.9871},
        "caught": {"all": 0.785, "doodle": 0.9, "font": 0.7},
        "passed": [1, 1, 0],
    }


@pytest.fixture
def gated(reports):
    """reports/ with an answers.json measured with a gate: canvases drawn, each file's rule
    counted on them, a drawing rule per gate file."""
    answers = json.loads((reports / "answers.json").read_text())
    answers["canvases"] = {"drawn": 80, "refused": 2, "method": "mnist", "seed": 0}
    for entry in answers["models"].values():
        entry["canvas"] = {"not_a_digit": None if entry["answer_rule"] is None else 0.009}
    answers["drawing_rule"] = {
        "gate.onnx": _drawing("float32", 0.428165, 0.9928),
        "gate.int8.onnx": _drawing("int8", 0.427844, 0.9927),
    }
    (reports / "answers.json").write_text(json.dumps(answers))
    return reports


def test_with_a_gate_the_section_explains_the_drawing_rule_and_gives_its_figures(gated):
    text = _section(gated)
    assert "the drawing's score is the smaller of the gate's confidence" in text
    assert "the digits shown are the served models' own" in text
    assert "the first 80 of them drawn as canvases" in text and "2 refused by it" in text
    # Per file, its own rule on the canvases; per drawing rule, every figure.
    assert "| mlp.onnx | 1.250 | 3.21% → 0.87% | 0.42% | 1.13% | 0.90% | 87.1% | 0.9876 |" in text
    assert "| original/cnn.onnx | none | 3.21% → 3.21% | 0.42% | 1.13% | n/a |" in text
    row = "| drawing rule (float32: mlp + cnn + gate) | each file's | — | 0.58% | — | 0.95% |"
    assert row + " 78.5% | 0.9928 |" in text
    assert "| drawing rule (int8: mlp + cnn + gate) | 42.78% | 0.50% | 0.58% | 0.95% |" in text
    assert "| drawing rule (float32: mlp + cnn + gate) | 0.9987 | 0.9871 | 90.0% | 70.0% |" in text
    # The picture is the float drawing rule's: what it lets through.
    assert "the drawing rule (float32: mlp + cnn + gate) answers 3 as a digit or" in text
    assert "most often: A (2), spiral (1)" in text


def test_without_a_gate_the_section_has_no_drawing_rule(reports):
    text = _section(reports)
    assert "drawing rule" not in text and "canvases: not a digit" not in text
