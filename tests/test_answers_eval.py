"""`flaxdigits answers` (flaxdigits/evaluation/answers.py) and the "not a digit" shares that
canvas-eval and robustness report, on toy models whose answer depends on the ink."""

from __future__ import annotations

import json

import numpy as np

from flaxdigits.core import contract
from flaxdigits.evaluation import answers, canvases, nondigits
from flaxdigits.evaluation import digits as mnist_eval
from flaxdigits.serve.runtime.predictor import Predictor


def test_answers_measures_every_file_on_test_digits_and_held_out_non_digits(
    answering_toy_dir, tmp_path
):
    out = tmp_path / "answers.json"
    report = answers.run([str(answering_toy_dir)], out, limit=300, log=lambda _: None)
    assert json.loads(out.read_text()) == report
    assert (tmp_path / "answers_passed.png").read_bytes().startswith(b"\x89PNG")
    others, kinds, _ = nondigits.heldout_inputs()
    assert report["heldout"]["count"] == len(kinds) and report["test_digits"] == 300
    images, labels = mnist_eval.load_test_digits(300)
    for label, m in report["models"].items():
        p = Predictor(answering_toy_dir / label)
        assert m["sha256"] == p.sha256 and m["answer_rule"] == p.answer_rule
        # Each figure again, from the predictor and the rule, here.
        test = p.predict_batch(contract.to_model_input(images))
        said = contract.answers(test.max(-1), p.answer_rule)
        assert m["test"]["not_a_digit"] == round(float(np.mean(said == "not a digit")), 6)
        assert m["test"]["accuracy"] == round(float(np.mean(test.argmax(-1) == labels)), 6)
        caught = contract.answers(p.predict_batch(others[..., None]).max(-1), p.answer_rule)
        caught = caught == "not a digit"
        assert m["caught"]["all"] == round(float(caught.mean()), 6)
        assert sorted(m["passed"]) == np.flatnonzero(~caught).tolist()
        for kind in set(kinds):
            assert 0.0 <= m["auroc"][kind] <= 1.0
        assert len(m["reliability"]["after"]) == len(m["reliability"]["before"]) == 15


def test_a_canvas_share_counts_the_canvases_kept_and_none_without_a_rule():
    rule = {"not_a_digit_below": 0.5, "not_sure_below": 0.8}
    probs = np.zeros((4, 10))
    probs[:, 0] = [0.3, 0.9, 0.2, 0.6]  # confidences
    failed = np.array([False, False, True, False])  # the 0.2 was refused: not counted
    assert canvases.not_a_digit_share(probs, rule, failed) == round(1 / 3, 6)
    assert canvases.not_a_digit_share(probs, None, failed) is None
    assert canvases.not_a_digit_share(probs, rule, np.ones(4, bool)) == 0.0
