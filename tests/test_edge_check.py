"""benchmarks/edge_check.py's comparison of x86 and arm64 `predict --json` records
(benchmarks/edge_compare.py): what passes the float criterion, what int8 only reports, for the
probabilities and for the drawing rule's answers under a gate. (The emulated run itself is `make
edge-check`, in CI.)"""

from __future__ import annotations

import pytest

from benchmarks import edge_check, edge_compare


def _record(file, probs):
    digit = max(range(10), key=lambda d: probs[d])
    return {"file": file, "digit": digit, "confidence": probs[digit], "probabilities": probs}


P = [0.0] * 7 + [0.9, 0.1, 0.0]  # a 7


@pytest.fixture
def x86():
    return {
        "a.png": _record("a.png", P),
        "b.png": _record("b.png", P[::-1]),
        "bad.png": {"file": "bad.png", "error": "not an image"},
    }


def test_identical_records_pass_both_gates(x86):
    for is_float in (True, False):
        result = edge_check.compare(x86, dict(x86), is_float=is_float)
        assert result["ok"] and result["predicted"] == 2 and result["errors_both"] == 1
        assert result["argmax_differences"] == 0 and result["max_abs_diff"] == 0.0


def test_a_float_difference_over_1e5_fails_and_1e6_passes(x86):
    arm = dict(x86)
    arm["a.png"] = _record("a.png", [p + (2e-5 if i == 7 else 0) for i, p in enumerate(P)])
    result = edge_check.compare(x86, arm, is_float=True)
    assert not result["ok"] and result["max_abs_diff"] == pytest.approx(2e-5)
    arm["a.png"] = _record("a.png", [p + (1e-6 if i == 7 else 0) for i, p in enumerate(P)])
    assert edge_check.compare(x86, arm, is_float=True)["ok"]


def test_a_different_argmax_fails_float_and_is_reported_for_int8(x86):
    arm = dict(x86)
    arm["a.png"] = _record("a.png", [0.0] * 7 + [0.4, 0.6, 0.0])
    result = edge_check.compare(x86, arm, is_float=True)
    assert not result["ok"] and result["argmax_differing_files"] == ["a.png"]
    result = edge_check.compare(x86, arm, is_float=False)
    assert result["ok"] and result["argmax_agreement"] == 0.5


def test_a_file_refused_on_one_side_only_or_with_another_message_fails(x86):
    arm = dict(x86)
    arm["a.png"] = {"file": "a.png", "error": "illegal instruction"}
    assert edge_check.compare(x86, arm, is_float=False)["error_mismatches"] == ["a.png"]
    arm = dict(x86)
    arm["bad.png"] = {"file": "bad.png", "error": "another reason"}
    assert not edge_check.compare(x86, arm, is_float=True)["ok"]
    del arm["bad.png"]
    assert not edge_check.compare(x86, arm, is_float=True)["ok"]


def _drawn(record, answer, score, below=0.4):
    """record under the drawing rule: its drawing, and the model's answer made by the rule."""
    drawing = {"answer": answer, "score": score, "not_a_digit_below": below}
    said = "not a digit" if answer == "not a digit" else record["answer"]
    return {**record, "answer": said, "drawing": drawing}


@pytest.fixture
def drawn(x86):
    """x86 under a gate: a.png a digit, b.png not a digit, bad.png refused."""
    a = _drawn({**x86["a.png"], "answer": "digit"}, "digit", 0.9)
    b = _drawn({**x86["b.png"], "answer": "not sure"}, "not a digit", 0.2)
    return {"a.png": a, "b.png": b, "bad.png": x86["bad.png"]}


def test_the_same_drawing_answers_pass_and_are_counted(drawn):
    for is_float in (True, False):
        result = edge_compare.compare_drawing(drawn, dict(drawn), is_float=is_float, gate=True)
        assert result["ok"] and result["checked"] and result["predicted"] == 2
        assert result["not_a_digit"] == {"x86_64": 1, "arm64": 1}
        assert result["drawing_differences"] == 0 and result["max_score_diff"] == 0.0


def test_a_different_drawing_answer_fails_float_and_is_reported_for_int8(drawn):
    arm = dict(drawn)
    arm["a.png"] = _drawn(drawn["a.png"], "not a digit", 0.39)
    result = edge_compare.compare_drawing(drawn, arm, is_float=True, gate=True)
    assert not result["ok"] and result["drawing_differing_files"] == ["a.png"]
    assert result["answer_differing_files"] == ["a.png"]
    assert result["not_a_digit"] == {"x86_64": 1, "arm64": 2}
    result = edge_compare.compare_drawing(drawn, arm, is_float=False, gate=True)
    assert result["ok"] and result["drawing_agreement"] == 0.5
    assert result["max_score_diff"] == pytest.approx(0.51)


def test_a_float_score_difference_over_1e5_fails_and_1e6_passes(drawn):
    arm = dict(drawn)
    arm["a.png"] = _drawn(drawn["a.png"], "digit", 0.9 + 2e-5)
    assert not edge_compare.compare_drawing(drawn, arm, is_float=True, gate=True)["ok"]
    assert edge_compare.compare_drawing(drawn, arm, is_float=False, gate=True)["ok"]
    arm["a.png"] = _drawn(drawn["a.png"], "digit", 0.9 + 1e-6)
    assert edge_compare.compare_drawing(drawn, arm, is_float=True, gate=True)["ok"]


def test_a_drawing_on_one_side_only_or_another_threshold_fails_both_variants(drawn, x86):
    arm = dict(drawn)
    arm["b.png"] = {k: v for k, v in drawn["b.png"].items() if k != "drawing"}
    arm["b.png"]["answer"] = "not sure"
    for is_float in (True, False):
        result = edge_compare.compare_drawing(drawn, arm, is_float=is_float, gate=True)
        assert not result["ok"] and result["without_drawing"] == ["b.png"]
    arm = dict(drawn)
    arm["a.png"] = _drawn(drawn["a.png"], "digit", 0.9, below=0.5)
    result = edge_compare.compare_drawing(drawn, arm, is_float=False, gate=True)
    assert not result["ok"] and result["threshold_differences"] == ["a.png"]
    # The release has the gate but predict applied it on neither side: not a pass either.
    assert not edge_compare.compare_drawing(x86, dict(x86), is_float=False, gate=True)["ok"]


def test_without_a_gate_the_rule_is_not_checked_and_a_stray_drawing_fails(x86, drawn):
    result = edge_compare.compare_drawing(x86, dict(x86), is_float=True, gate=False)
    assert result["ok"] and not result["checked"] and "not checked" in result["why"]
    line = edge_compare.summary_line("mlp.onnx", {**_summary(x86), "drawing": result})
    assert "drawing rule not checked" in line and line.endswith("-> ok")
    assert not edge_compare.compare_drawing(x86, drawn, is_float=False, gate=False)["ok"]


def test_the_summary_says_failed_for_int8_refused_on_one_side_and_shows_the_drawing(drawn):
    arm = dict(drawn)
    arm["a.png"] = {"file": "a.png", "error": "illegal instruction"}
    line = edge_compare.summary_line("mlp.int8.onnx", _summary(drawn, arm, is_float=False))
    assert line.endswith("-> FAILED")
    m = _summary(drawn)
    m["drawing"] = edge_compare.compare_drawing(drawn, dict(drawn), is_float=True, gate=True)
    line = edge_compare.summary_line("cnn.onnx", m)
    assert "'not a digit' 1 here / 1 arm64, drawing differences 0" in line
    assert line.endswith("-> ok")


def _summary(x86, arm=None, *, is_float=True):
    """compare()'s result as check_model completes it, for summary_line."""
    m = edge_compare.compare(x86, dict(arm or x86), is_float=is_float)
    return {**m, "arm64_mnist_accuracy": 1.0, "seconds": {"arm64_emulated": 2.0, "x86_64": 1.0}}


def test_the_files_checked_and_what_the_output_says_about_the_gate():
    models = {"cnn.onnx", "cnn.int8.onnx", "mlp.onnx", "mlp.int8.onnx"}
    gated = edge_check.files_to_check(models | {"gate.onnx", "gate.int8.onnx", "cnn.json"})
    assert list(gated) == [*edge_check.MODEL_FILES, "gate.onnx", "gate.int8.onnx"]
    assert all(gated.values())
    assert edge_check.gate_status(gated).startswith("gate: checked (gate.onnx, gate.int8.onnx")
    older = edge_check.files_to_check(models)  # a release from before the gate
    assert list(older) == list(edge_check.MODEL_FILES) and not any(older.values())
    assert edge_check.gate_status(older).startswith("gate: not checked")
    small = edge_check.files_to_check({"cnn.int8.onnx", "mlp.int8.onnx", "gate.int8.onnx"})
    assert small == {"cnn.int8.onnx": True, "mlp.int8.onnx": True, "gate.int8.onnx": True}
    mixed = edge_check.files_to_check(models | {"gate.int8.onnx"})  # no float gate
    assert not mixed["cnn.onnx"] and mixed["cnn.int8.onnx"]
