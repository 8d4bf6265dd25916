"""web/answer.js, the static site's answer rule and words, against the Python reference in Node
(issue 33): contract.answer on many confidences and rules, the edges included (exactly at a
threshold, one float step either side, float32 confidences, no rule), and the words the Gradio
page shows on a card and in its status line (serve/page/views.py). They must agree on all."""

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
