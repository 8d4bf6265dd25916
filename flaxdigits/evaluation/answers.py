"""How far the exported models' answers can be trusted: calibration and "not a digit".

    flaxdigits answers --models models models/original --out reports/answers.json

For every .onnx file: on the 10k MNIST test digits, the expected calibration error of its
probabilities (calibrated: the graph divides the logits by the file's temperature) and of the
same probabilities before calibration (p ** T, renormalised), their reliability diagrams, and the
shares the file's answer rule answers "not a digit" and "not sure"; on the held-out non-digits of
evaluation/nondigits.py (typed letters and symbols, Pillow doodles: kinds training never drew),
the AUROC of the confidence, digits against non-digits, overall and per kind, and the share its
rule catches. A grid of the held-out non-digits the served CNN still reads as digits is drawn
beside the report (reports/answers_passed.png). numpy, Pillow and onnxruntime only.
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
from flaxdigits.evaluation import calibration, nondigits
from flaxdigits.evaluation import digits as mnist_eval
from flaxdigits.serve.runtime.predictor import Predictor, model_files

SCHEMA = "flaxdigits.answers.v1"
PASSED_SHOWN = 40  # held-out non-digits drawn in the picture


def _before(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The uncalibrated probabilities: softmax(logits) = softmax(logits / T) ** T, renormalised."""
    p = np.asarray(probabilities, np.float64) ** temperature
    return p / p.sum(-1, keepdims=True)


def measure_file(predictor: Predictor, test, heldout) -> dict:
    """One file's figures (see the module docstring)."""
    images, labels = test
    others, kinds = heldout
    probs = predictor.predict_batch(images)
    rule = predictor.answer_rule
    t = rule["temperature"] if rule else 1.0
    after = calibration.reliability(probs, labels)
    before = calibration.reliability(_before(probs, t), labels)
    confidence, other = probs.max(-1), predictor.predict_batch(others).max(-1)
    answers = contract.answers(confidence, rule)
    caught = contract.answers(other, rule) == "not a digit"
    kinds = np.asarray(kinds)
    return {
        "file": predictor.path.name,
        "sha256": predictor.sha256,
        "answer_rule": rule,
        "test": {
            "accuracy": round(float(np.mean(probs.argmax(-1) == labels)), 6),
            "ece_before": round(before["ece"], 6),
            "ece": round(after["ece"], 6),
            "not_a_digit": round(float(np.mean(answers == "not a digit")), 6),
            "not_sure": round(float(np.mean(answers == "not sure")), 6),
        },
        "reliability": {"before": before["bins"], "after": after["bins"]},
        "auroc": {"all": round(calibration.auroc(confidence, other), 6)}
        | {
            k: round(calibration.auroc(confidence, other[kinds == k]), 6)
            for k in sorted(set(kinds))
        },
        "caught": {"all": round(float(caught.mean()), 6)}
        | {k: round(float(caught[kinds == k].mean()), 6) for k in sorted(set(kinds))},
        "passed": np.flatnonzero(~caught).tolist(),
    }


def evaluate_answers(paths: Sequence[Path], *, limit: int | None = None) -> tuple[dict, np.ndarray]:
    """(the report of every model file, the held-out images), measured on the same inputs."""
    test_images, test_labels = mnist_eval.load_test_digits(mnist_eval.check_limit(limit))
    others, kinds, names = nondigits.heldout_inputs()
    test = (contract.to_model_input(test_images), np.asarray(test_labels))
    heldout = (others[..., None].astype(np.float32), kinds)
    models = {}
    for path in paths:
        label = f"{path.parent.name}/{path.name}" if path.parent.name == "original" else path.name
        models[label] = measure_file(Predictor(path), test, heldout)
    report = {
        "schema": SCHEMA,
        "test_digits": len(test_labels),
        "heldout": {"count": len(kinds), "kinds": {k: kinds.count(k) for k in sorted(set(kinds))}},
        "heldout_names": names,
        "models": models,
    }
    return report, others


def passed_picture(report: dict, others: np.ndarray, label: str) -> bytes:
    """PNG: up to PASSED_SHOWN held-out non-digits the file `label` answers as digits (or not
    sure), each with what it is and what the model said."""
    passed = report["models"][label]["passed"][:PASSED_SHOWN]
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
    log: Callable[[str], object] = print,
) -> dict:
    """`flaxdigits answers`: measure every model file of `models` (directories or .onnx files),
    write the report and the picture of what the served CNN lets through, log a table."""
    paths = [p for m in models for p in (model_files(m) if Path(m).is_dir() else [Path(m)])]
    if not paths:
        raise ValueError(f"no .onnx models in {', '.join(models)}: run make export first")
    report, others = evaluate_answers(paths, limit=limit)
    report["table"] = format_table(report)
    out = Path(out)
    write_json_atomic(out, report)
    served = "cnn.onnx" if "cnn.onnx" in report["models"] else next(iter(report["models"]))
    write_bytes_atomic(
        out.with_name(out.stem + "_passed.png"), passed_picture(report, others, served)
    )
    log(report["table"])
    return report


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def format_table(report: dict) -> str:
    """One row per file: temperature, ECE before → after, the rule's answers on the test digits,
    the non-digits it catches and the AUROC (the comparison report quotes it as it is)."""
    rows = []
    for label, m in report["models"].items():
        rule, test = m["answer_rule"], m["test"]
        rows.append(
            [
                label,
                f"{rule['temperature']:.3f}" if rule else "none",
                f"{_pct(test['ece_before'])} → {_pct(test['ece'])}",
                _pct(test["not_a_digit"]),
                _pct(test["not_sure"]),
                _pct(m["caught"]["all"], 1),
                f"{m['auroc']['all']:.4f}",
            ]
        )
    header = ["file", "temperature", "ECE before → after", "test digits: not a digit"]
    header += ["not sure", "non-digits caught", "AUROC"]
    return markdown_table(header, rows, align="lrrrrrr")


def read(path) -> dict:
    """A report written by run()."""
    return json.loads(Path(path).read_text())
