"""web/answer.js, the static site's answer rule and words, against the Python reference in Node
(issue 33): contract.answer on many confidences and rules, the edges included (exactly at a
threshold, one float step either side, float32 confidences, no rule), the gate's drawing rule
(contract.drawing_scores and drawing_answers) on many probabilities, answers and scores, and the
words the Gradio page shows on a card and in its status line (serve/page/views.py). They must
agree on all."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from flaxdigits.core import contract
from flaxdigits.serve.page import views
from flaxdigits.serve.runtime.predictor import Prediction
from tests.support import web_support as ws
from tests.support.toy_onnx import TOY_ANSWER_RULE

RUNNER = ws.ROOT / "web" / "test" / "answer_run.mjs"
# Runs answer.js's drawing rule on the test's cases: JOB {"module": file URL of answer.js,
# "scores": [[[probabilities per member], gate's probabilities]], "answers": [[answers, score,
# rule]]}.
DRAWING_RUNNER = """
import { readFileSync, writeFileSync } from "node:fs";
const [jobPath, outPath] = process.argv.slice(2);
const job = JSON.parse(readFileSync(jobPath, "utf8"));
const { drawingScore, drawingAnswers } = await import(job.module);
writeFileSync(outPath, JSON.stringify({
  scores: job.scores.map(([members, gate]) => drawingScore(members, gate)),
  answers: job.answers.map(([answers, score, rule]) => drawingAnswers(answers, score, rule)),
}));
"""


def rule(low: float, high: float) -> dict:
    return TOY_ANSWER_RULE | {"not_a_digit_below": low, "not_sure_below": high}


RULES = [
    None,  # a file from before the rule: always a digit
    {},  # falsy in Python as None is; an empty object is truthy in JavaScript
    TOY_ANSWER_RULE,
    rule(0.37251839, 0.8),  # as export/confidence.py fits one
    rule(0.5, 0.5),  # no "not sure" band
    rule(0.0, 0.0),  # never "not a digit"
    rule(0.0, 1.0),
    rule(1.0, 1.0),  # only a confidence of exactly 1 is a digit
    rule(float(np.float32(0.8)), float(np.float32(0.8))),
]


def confidences(rules) -> list[float]:
    """0, 1, every threshold and the doubles and float32 values on either side, random ones."""
    out = [0.0, 1.0, 0.1, 0.5, 0.8, 1e-12, 1 - 1e-12]
    for r in rules:
        for t in (r or {}).get("not_a_digit_below"), (r or {}).get("not_sure_below"):
            if t is None:
                continue
            out += [t, math.nextafter(t, 0.0), math.nextafter(t, 1.0)]
            f = np.float32(t)
            out += [float(f), float(np.nextafter(f, np.float32(0))), float(np.nextafter(f, 1))]
    rng = np.random.default_rng([33, 1])
    out += [float(v) for v in rng.random(500)]
    out += [float(v) for v in rng.random(500).astype(np.float32)]  # as onnxruntime gives them
    return [c for c in out if 0.0 <= c <= 1.0]


def prediction(digit: int, answer: str) -> Prediction:
    probs = tuple(0.5 if d == digit else 0.5 / 9 for d in range(10))
    return Prediction(digit=digit, confidence=0.5, probabilities=probs, answer=answer)


def run_js(node, job: dict, tmp_path) -> dict:
    return ws.run_node_job(node, RUNNER, job, tmp_path, timeout=120)


@pytest.fixture(scope="module")
def node():
    return ws.require_node()


def test_js_answer_rule_and_words_match_python(node, tmp_path):
    cases = [(c, r) for r in RULES for c in confidences(RULES)]
    words = [(a, d) for a in contract.ANSWERS for d in range(10)]
    summaries = [
        list(zip(names, pair, strict=True))
        for names in (("mlp", "cnn"), ("mlp",), ("mlp", "cnn", "x"))
        for pair in itertools.product(
            [(3, a) for a in contract.ANSWERS] + [(8, "digit")], repeat=len(names)
        )
    ]
    job = {
        "answers": cases,
        "words": words,
        "summaries": [
            [{"name": n, "digit": d, "answer": a} for n, (d, a) in models] for models in summaries
        ],
    }
    js = run_js(node, job, tmp_path)
    py = [contract.answer(c, r) for c, r in cases]
    wrong = [(c, r, p, j) for (c, r), p, j in zip(cases, py, js["answers"], strict=True) if p != j]
    assert not wrong, wrong[:5]
    assert set(py) == set(contract.ANSWERS)  # every answer was met
    assert js["words"] == [views.answer_words(prediction(d, a)) for a, d in words]
    expected = [
        views.summary({n: prediction(d, a) for n, (d, a) in models}) for models in summaries
    ]
    assert js["summaries"] == expected
    print(f"\n{len(cases)} confidence-rule pairs, {len(summaries)} status lines: all agree")


def drawing_rule(below: float) -> dict:
    members = {name: "0" * 64 for name in contract.MODEL_NAMES}
    return contract.check_drawing_rule(
        {"members": members, "not_a_digit_below": below, "validation_rejected": 0.005}
    )


def model_probabilities(rng, models: int) -> list[list[float]]:
    """One drawing's probabilities from `models` models, float32 as onnxruntime gives them: a
    softmax of random logits, sharp or flat, or a one-hot or uniform answer."""
    kind = rng.integers(4)
    if kind == 0:
        p = np.eye(10)[rng.integers(10, size=models)]
    elif kind == 1:
        p = np.full((models, 10), 0.1)
    else:
        z = rng.normal(size=(models, 10)) * (8.0 if kind == 2 else 1.0)
        p = np.exp(z - z.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
    return p.astype(np.float32).astype(np.float64).tolist()


def test_js_drawing_rule_matches_python(node, tmp_path):
    rng = np.random.default_rng([33, 2])
    # One member or both, and the gate: (members' probabilities, the gate's).
    drawings = [
        (model_probabilities(rng, int(rng.integers(1, 3))), model_probabilities(rng, 1)[0])
        for _ in range(3000)
    ]
    scores = [
        float(contract.drawing_scores(np.asarray(m)[:, None], np.asarray(g)[None])[0])
        for m, g in drawings
    ]
    # Both sides of the score's minimum were met: the gate's own confidence, and the mean's.
    assert len({s == max(g) for s, (_, g) in zip(scores, drawings, strict=True)}) == 2
    # Thresholds: the usual ones, those of a fitted rule and of float32 values, and scores of the
    # drawings themselves, so that a score one bit away from Python's would answer otherwise.
    thresholds = [0.0, 0.5, 1.0, 0.712345, float(np.float32(0.6)), *scores[:40]]
    rules = [None, {}, *(drawing_rule(t) for t in thresholds)]
    edges = [0.0, 1.0, *(float(v) for v in rng.random(20)), *scores[:200]]
    for t in thresholds:
        edges += [t, math.nextafter(t, 0.0), math.nextafter(t, 1.0)]
        f = np.float32(t)
        edges += [float(np.nextafter(f, np.float32(0))), float(np.nextafter(f, np.float32(1)))]
    answer_sets = [
        list(a) for m in (1, 2, 3) for a in itertools.product(contract.ANSWERS, repeat=m)
    ]
    cases = [
        (answer_sets[int(rng.integers(len(answer_sets)))], score, r)
        for r in rules
        for score in edges
        if 0.0 <= score <= 1.0
    ]
    cases += [(a, scores[0], drawing_rule(scores[0])) for a in answer_sets]  # exactly at it
    module = (ws.ROOT / "web" / "answer.js").as_uri()
    runner = tmp_path / "drawing_run.mjs"
    runner.write_text(DRAWING_RUNNER)
    job = {"module": module, "scores": drawings, "answers": cases}
    js = ws.run_node_job(node, runner, job, tmp_path, timeout=120)

    assert js["scores"] == scores  # bit for bit: the threshold compares them
    py = [contract.drawing_answers(a, s, r).tolist() for a, s, r in cases]
    wrong = [(c, p, j) for c, p, j in zip(cases, py, js["answers"], strict=True) if p != j]
    assert not wrong, wrong[:5]
    # Every branch was met: rejected, kept with "not sure" made of "not a digit", no rule.
    assert any(set(p) == {"not a digit"} and len(p) > 1 for p in py)
    met = list(zip(cases, py, strict=True))
    assert any("not a digit" in a and "not sure" in p for (a, _, _), p in met)
    assert any(r is None and "not a digit" in p for (_, _, r), p in met)
    print(f"\n{len(drawings)} drawings' scores, {len(cases)} answer cases: all agree")
