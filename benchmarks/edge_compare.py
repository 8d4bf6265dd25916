"""benchmarks/edge_check.py's comparisons of two `flaxdigits predict --json` runs of one model
file, x86_64 and arm64, {file: record} each: the probabilities (compare), and for mlp and cnn
under a gate the drawing rule's answers (compare_drawing); and the lines printed at the end.

Float files are gated (identical argmax, answers and drawing answers, max |dp| and |d score| <=
FLOAT_TOLERANCE); int8 files are reported (the quantized kernels differ by architecture), except
that both sides must refuse the same files with the same message and apply the drawing rule to
the same files. The JSON lines carry 6 decimals: |dp| and |d score| are resolved to 1e-6.
"""

from __future__ import annotations

import numpy as np

from flaxdigits.core import contract

FLOAT_TOLERANCE = 1e-5


def compare(x86: dict[str, dict], arm: dict[str, dict], *, is_float: bool) -> dict:
    """Agreement of two predict runs' records by file."""
    if set(x86) != set(arm):
        only = sorted(set(x86) ^ set(arm))[:3]
        return {"ok": False, "why": f"different files: {only}"}
    errors = {f for f, r in x86.items() if "error" in r}
    error_mismatch = sorted(f for f in x86 if ("error" in arm[f]) != (f in errors))
    error_mismatch += sorted(
        f for f in errors if "error" in arm[f] and arm[f]["error"] != x86[f]["error"]
    )
    predicted = sorted(set(x86) - errors - set(error_mismatch))
    a = np.array([x86[f]["probabilities"] for f in predicted], np.float64).reshape(-1, 10)
    b = np.array([arm[f]["probabilities"] for f in predicted], np.float64).reshape(-1, 10)
    argmax = [f for f, p, q in zip(predicted, a, b, strict=True) if p.argmax() != q.argmax()]
    digits = [f for f in predicted if x86[f]["digit"] != arm[f]["digit"]]
    max_diff = float(np.abs(a - b).max()) if len(predicted) else 0.0
    # int8: the same files must fail; argmax agreement and |dp| are reported, not gated (the
    # quantized kernels differ by architecture).
    ok = not error_mismatch
    if is_float:
        ok = ok and not argmax and not digits and max_diff <= FLOAT_TOLERANCE
    return {
        "ok": ok,
        "files": len(x86),
        "predicted": len(predicted),
        "errors_both": len(errors) - len(error_mismatch),
        "error_mismatches": error_mismatch[:10],
        "argmax_differences": len(argmax),
        "argmax_differing_files": argmax[:10],
        "argmax_agreement": (len(predicted) - len(argmax)) / max(1, len(predicted)),
        "max_abs_diff": max_diff,
        "criterion": f"argmax identical, max |dp| <= {FLOAT_TOLERANCE:g}"
        if is_float
        else "same files refused; argmax agreement and max |dp| reported",
    }


def compare_drawing(x86: dict[str, dict], arm: dict[str, dict], *, is_float: bool, gate: bool):
    """The drawing rule's answers of two predict runs of mlp or cnn, for the files predicted on
    both sides (compare() checks the files and refusals). gate: the gate of the file's variant
    lies in the release, so every predicted record must carry a `drawing` on both sides; else
    none may, and the rule is not checked. The models' own answers (under the rule with a gate)
    are compared either way."""
    predicted = sorted(
        f for f in x86 if f in arm and "error" not in x86[f] and "error" not in arm[f]
    )
    answers = [f for f in predicted if x86[f].get("answer") != arm[f].get("answer")]
    if not gate:
        stray = [f for f in predicted if "drawing" in x86[f] or "drawing" in arm[f]]
        return {
            "ok": not stray and (not is_float or not answers),
            "checked": False,
            "why": "no gate of this variant in the release: the drawing rule was not checked",
            "unexpected_drawings": stray[:10],
            "answer_differences": len(answers),
            "answer_differing_files": answers[:10],
        }
    missing = [f for f in predicted if "drawing" not in x86[f] or "drawing" not in arm[f]]
    both = [f for f in predicted if f not in missing]
    here = {f: x86[f]["drawing"] for f in both}
    there = {f: arm[f]["drawing"] for f in both}
    differing = [f for f in both if here[f]["answer"] != there[f]["answer"]]
    thresholds = [f for f in both if here[f]["not_a_digit_below"] != there[f]["not_a_digit_below"]]
    scores = [abs(here[f]["score"] - there[f]["score"]) for f in both]
    max_score_diff = float(max(scores, default=0.0))
    ok = not missing and not thresholds
    if is_float:
        ok = ok and not differing and not answers and max_score_diff <= FLOAT_TOLERANCE
    return {
        "ok": ok,
        "checked": True,
        "predicted": len(predicted),
        "without_drawing": missing[:10],
        "threshold_differences": thresholds[:10],
        "not_a_digit": {
            "x86_64": sum(d["answer"] == "not a digit" for d in here.values()),
            "arm64": sum(d["answer"] == "not a digit" for d in there.values()),
        },
        "drawing_differences": len(differing),
        "drawing_differing_files": differing[:10],
        "drawing_agreement": (len(both) - len(differing)) / max(1, len(both)),
        "max_score_diff": max_score_diff,
        "answer_differences": len(answers),
        "answer_differing_files": answers[:10],
        "criterion": f"drawing and answers identical, max |d score| <= {FLOAT_TOLERANCE:g}"
        if is_float
        else "a drawing on the same files; its agreement and max |d score| reported",
    }


def _verdict(ok: bool, is_float: bool) -> str:
    return "FAILED" if not ok else "ok" if is_float else "reported"


def summary_line(file: str, m: dict) -> str:
    """One model file's outcome, as printed at the end (and its drawing rule's, for mlp and
    cnn)."""
    if "files" not in m:
        return f"{file:14} FAILED: {m.get('why')}"
    is_float = contract.variant_of(file) == "float32"
    line = (
        f"{file:14} {m['files']} files ({m['predicted']} predicted, {m['errors_both']} refused "
        f"on both), argmax differences {m['argmax_differences']}, max |dp| "
        f"{m['max_abs_diff']:.1e}, arm64 MNIST accuracy {m['arm64_mnist_accuracy']:.2%}, "
        f"{m['seconds']['arm64_emulated']} s emulated / {m['seconds']['x86_64']} s x86 "
        f"-> {_verdict(m['ok'], is_float)}"
    )
    d = m.get("drawing")
    if d is None:
        return line
    if not d["checked"]:
        return (
            f"{line}\n{'':14} drawing rule not checked ({d['why'].split(':')[0]}); answer "
            f"differences {d['answer_differences']} -> {_verdict(d['ok'], is_float)}"
        )
    return (
        f"{line}\n{'':14} drawing rule: 'not a digit' {d['not_a_digit']['x86_64']} here / "
        f"{d['not_a_digit']['arm64']} arm64, drawing differences {d['drawing_differences']}, "
        f"answer differences {d['answer_differences']}, max |d score| "
        f"{d['max_score_diff']:.1e}, without a drawing {len(d['without_drawing'])} "
        f"-> {_verdict(d['ok'], is_float)}"
    )
