"""How far the exported models' answers can be trusted: calibration and "not a digit".

    flaxdigits answers --models models models/original --out reports/answers.json

For every .onnx file (a gate's included): on the 10k MNIST test digits, the expected calibration
error of its probabilities (calibrated: the graph divides the logits by the file's temperature)
and of the same probabilities before calibration (p ** T, renormalised), their reliability
diagrams, and the shares the file's answer rule answers "not a digit" and "not sure"; on the
held-out non-digits of evaluation/nondigits.py (typed letters and symbols, Pillow doodles: kinds
training never drew), the AUROC of the confidence, digits against non-digits, overall and per
kind, and the share its rule catches. In a folder with a gate (contract.GATE_NAME), the first
CANVASES test digits are also drawn as canvases (evaluation/canvases.py, `mnist`
preprocessing), each file's rule is counted on them, and each gate's drawing rule is measured
(evaluation/drawing_answers.py), also on DISTORTED test digits rotated, slanted and thickened.
A grid of the held-out non-digits that still pass, the float
drawing rule's when there is one, else the served CNN's, is drawn beside the report
(reports/answers_passed.png). numpy, Pillow and onnxruntime only.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from flaxdigits.core import contract
from flaxdigits.core.atomic import write_bytes_atomic, write_json_atomic
from flaxdigits.core.tables import markdown_table
from flaxdigits.evaluation import calibration, canvases, drawing_answers, nondigits
from flaxdigits.evaluation import digits as mnist_eval
from flaxdigits.evaluation.drawing_answers import Inputs, per_kind, share
from flaxdigits.serve.runtime.predictor import Predictor, model_files

SCHEMA = "flaxdigits.answers.v1"
PASSED_SHOWN = 40  # held-out non-digits drawn in the picture
CANVAS_METHOD = contract.DEFAULT_PREPROCESS_METHOD  # the page's preprocessing of the canvases


def _before(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The uncalibrated probabilities: softmax(logits) = softmax(logits / T) ** T, renormalised."""
    p = np.asarray(probabilities, np.float64) ** temperature
    return p / p.sum(-1, keepdims=True)


def label_of(path: Path) -> str:
    """A file's name in the report: NAME.onnx, or original/NAME.onnx in models/original."""
    return f"{path.parent.name}/{path.name}" if path.parent.name == "original" else path.name


def measure_file(predictor: Predictor, inputs: Inputs, labels: np.ndarray, kinds) -> dict:
    """One file's figures (see the module docstring): inputs holds "test" (the labelled digits),
    "heldout" (the non-digits, of `kinds`) and, when canvases were drawn, "canvas"."""
    probs = inputs.probabilities(predictor, "test")
    rule = predictor.answer_rule
    t = rule["temperature"] if rule else 1.0
    after = calibration.reliability(probs, labels)
    before = calibration.reliability(_before(probs, t), labels)
    confidence = probs.max(-1)
    other = inputs.probabilities(predictor, "heldout").max(-1)
    answers = contract.answers(confidence, rule)
    caught = contract.answers(other, rule) == "not a digit"
    entry = {
        "file": predictor.path.name,
        "sha256": predictor.sha256,
        "answer_rule": rule,
        "test": {
            "accuracy": round(float(np.mean(probs.argmax(-1) == labels)), 6),
            "ece_before": round(before["ece"], 6),
            "ece": round(after["ece"], 6),
            "not_a_digit": share(answers == "not a digit"),
            "not_sure": share(answers == "not sure"),
        },
        "reliability": {"before": before["bins"], "after": after["bins"]},
        "auroc": per_kind(lambda o: calibration.auroc(confidence, o), other, kinds),
        "caught": per_kind(lambda c: float(np.mean(c)), caught, kinds),
        "passed": np.flatnonzero(~caught).tolist(),
    }
    if "canvas" in inputs.sets:
        drawn = inputs.probabilities(predictor, "canvas").max(-1)
        said = None if rule is None else share(contract.answers(drawn, rule) == "not a digit")
        entry["canvas"] = {"not_a_digit": said}
    return entry


def evaluate_answers(
    paths: Sequence[Path],
    *,
    limit: int | None = None,
    gates: Sequence[Path] = (),
    workers: int | None = None,
) -> tuple[dict, np.ndarray]:
    """(the report of every model file and of each gate's drawing rule, the held-out images),
    measured on the same inputs; the canvases are drawn only when there is a gate."""
    test_images, labels = mnist_eval.load_test_digits(mnist_eval.check_limit(limit))
    others, kinds, names = nondigits.heldout_inputs()
    sets = {"test": contract.to_model_input(test_images), "heldout": others[..., None]}
    drawn = test_images[: drawing_answers.CANVASES]
    if gates:
        images, refused = canvases.drawn_digits(drawn, method=CANVAS_METHOD, workers=workers)
        sets["canvas"] = images[~refused]
        sets |= drawing_answers.distorted_sets(test_images)
    inputs = Inputs(sets)
    report = {
        "schema": SCHEMA,
        "test_digits": len(labels),
        "heldout": {"count": len(kinds), "kinds": {k: kinds.count(k) for k in sorted(set(kinds))}},
        "heldout_names": names,
        "models": {
            label_of(p): measure_file(Predictor(p), inputs, np.asarray(labels), kinds)
            for p in paths
        },
    }
    if gates:
        report["canvases"] = {
            "drawn": len(drawn),
            "refused": int(refused.sum()),
            "method": CANVAS_METHOD,
            "seed": 0,
        }
        report["drawing_rule"] = {
            label_of(g): drawing_answers.measure_rule(g, inputs, kinds) for g in gates
        }
    return report, others


def shown_passed(report: dict) -> tuple[str, list[int]]:
    """(what, indices) of the held-out non-digits the picture shows: those the first float
    drawing rule lets through when there is a gate, else those the served CNN does."""
    for label, entry in (report.get("drawing_rule") or {}).items():
        if entry["variant"] == "float32":
            return drawing_answers.row_label(label, entry), entry["passed"]
    label = "cnn.onnx" if "cnn.onnx" in report["models"] else next(iter(report["models"]))
    return label, report["models"][label]["passed"]


def passed_picture(report: dict, others: np.ndarray, passed: Sequence[int]) -> bytes:
    """PNG: up to PASSED_SHOWN of the held-out non-digits `passed` (indices: those a rule
    answers as digits or not sure), each with what it is."""
    passed = list(passed)[:PASSED_SHOWN]
    names, cell, cols = report["heldout_names"], 56, 10
    rows = max(1, -(-len(passed) // cols))
    sheet = Image.new("L", (cols * cell, rows * (cell + 14)), 255)
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(passed):
        x, y = (k % cols) * cell, (k // cols) * (cell + 14)
        glyph = Image.fromarray((255 * (1 - others[i])).astype(np.uint8)).resize(
            (cell - 4, cell - 4)
        )
        sheet.paste(glyph, (x + 2, y + 2))
        draw.text((x + 3, y + cell - 1), str(names[i])[:8], fill=0)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


def run(
    models: Sequence[str],
    out,
    *,
    limit: int | None = None,
    workers: int | None = None,
    log: Callable[[str], object] = print,
) -> dict:
    """`flaxdigits answers`: measure every model file of `models` (directories or .onnx files),
    and the drawing rule of each directory's gate; write the report and the picture of what the
    drawing rule (no gate: the served CNN) lets through, log a table."""
    dirs = [Path(m) for m in models if Path(m).is_dir()]
    gates = [g for d in dirs for g in drawing_answers.gate_files(d)]
    paths = [p for m in models for p in (model_files(m) if Path(m).is_dir() else [Path(m)])]
    paths += gates  # after the served files: the gate's own rows
    if not paths:
        raise ValueError(f"no .onnx models in {', '.join(models)}: run make export first")
    report, others = evaluate_answers(paths, limit=limit, gates=gates, workers=workers)
    report["table"] = format_table(report)
    out = Path(out)
    write_json_atomic(out, report)
    _, passed = shown_passed(report)
    write_bytes_atomic(
        out.with_name(out.stem + "_passed.png"), passed_picture(report, others, passed)
    )
    log(report["table"])
    return report


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def format_table(report: dict) -> str:
    """One row per file: temperature, ECE before → after, the rule's answers on the test digits
    (and canvases, when drawn), the non-digits it catches and the AUROC; then one row per
    drawing rule (the comparison report quotes it as it is)."""
    drawn = "canvases" in report
    rows = []
    for label, m in report["models"].items():
        rule, test = m["answer_rule"], m["test"]
        canvas = [_pct((m.get("canvas") or {}).get("not_a_digit"))] if drawn else []
        rows.append(
            [
                label,
                f"{rule['temperature']:.3f}" if rule else "none",
                f"{_pct(test['ece_before'])} → {_pct(test['ece'])}",
                _pct(test["not_a_digit"]),
                _pct(test["not_sure"]),
                *canvas,
                _pct(m["caught"]["all"], 1),
                f"{m['auroc']['all']:.4f}",
            ]
        )
    for label, d in (report.get("drawing_rule") or {}).items():
        rows.append(
            [
                drawing_answers.row_label(label, d),
                "each file's",
                "—",
                _pct(d["test"]["not_a_digit"]),
                "—",
                _pct(d["canvas"]["not_a_digit"]),
                _pct(d["caught"]["all"], 1),
                f"{d['auroc']['all']:.4f}",
            ]
        )
    header = ["file", "temperature", "ECE before → after", "test digits: not a digit"]
    header += ["not sure", *(["canvases: not a digit"] if drawn else [])]
    header += ["non-digits caught", "AUROC"]
    return markdown_table(header, rows, align="l" + "r" * (len(header) - 1))


def read(path) -> dict:
    """A report written by run()."""
    return json.loads(Path(path).read_text())
