"""benchmarks/edge_check.py's comparison of x86 and arm64 `predict --json` records: what passes
the float gate, what int8 only reports. (The emulated run itself is `make edge-check`, in CI.)"""

from __future__ import annotations

import pytest

from benchmarks import edge_check


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
