"""`flaxdigits answers` (flaxdigits/evaluation/answers.py) and the "not a digit" shares that
canvas-eval and robustness report, on toy models whose answer depends on the ink."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from flaxdigits.core import contract
from flaxdigits.evaluation import answers, canvases, nondigits
from flaxdigits.evaluation import digits as mnist_eval
from flaxdigits.serve.runtime.predictor import ModelLoadError, Predictor
from flaxdigits.serve.runtime.preprocess import preprocess
from tests.support.toy_onnx import toy_model_bytes, upright_stroke_weights, write_gate

LIMIT = 300  # test digits, as the smoke run (LIMIT=300)


def test_answers_measures_every_file_on_test_digits_and_held_out_non_digits(
    answering_toy_dir, tmp_path
):
    out = tmp_path / "answers.json"
    report = answers.run([str(answering_toy_dir)], out, limit=LIMIT, log=lambda _: None)
    assert json.loads(out.read_text()) == report
    # A folder without a gate: no drawing rule, no canvases drawn, the table as it always was.
    assert "drawing_rule" not in report and "canvases" not in report
    assert "canvas" not in report["models"]["cnn.onnx"] and "canvases" not in report["table"]
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


# ------------------------------------------------------------------- the drawing rule (issue 33)


@pytest.fixture(scope="module")
def gated_int8(gated_toy_dir, tmp_path_factory):
    """gated_toy_dir's mlp and cnn, each also as its int8 file (the same graph), and a gate of
    its own (surer of an upright stroke than the cnn: its probabilities differ from both) in
    both variants, its manifest's int8 drawing rule at another threshold."""
    target = tmp_path_factory.mktemp("gated_int8")
    for name in ("mlp", "cnn"):
        shutil.copy(gated_toy_dir / f"{name}.onnx", target / f"{name}.onnx")
    write_gate(target, below=0.5, weights=upright_stroke_weights(1, 0.5))
    for path in sorted(target.glob("*.onnx")):
        shutil.copy(path, path.with_name(path.name.replace(".onnx", ".int8.onnx")))
    manifest = json.loads((target / "gate.json").read_text())
    data = (target / "gate.int8.onnx").read_bytes()
    entry = {"file": "gate.int8.onnx", "size": len(data), "variant": "int8"}
    manifest["files"].append(entry | {"sha256": hashlib.sha256(data).hexdigest()})
    rule = manifest["drawing_rule"]["float32"]
    manifest["drawing_rule"]["int8"] = rule | {"not_a_digit_below": 0.55}
    (target / "gate.json").write_text(json.dumps(manifest))
    return target


@pytest.fixture(scope="module")
def gated_report(gated_int8, tmp_path_factory):
    out = tmp_path_factory.mktemp("gated_answers") / "answers.json"
    return answers.run([str(gated_int8)], out, limit=LIMIT, workers=1, log=lambda _: None), out


@pytest.fixture(scope="module")
def drawn():
    """The first LIMIT test digits drawn again here, one by one, as canvas-eval draws digit i."""
    images, _ = mnist_eval.load_test_digits(LIMIT)
    rng = [np.random.default_rng([0, i]) for i in range(len(images))]
    return np.stack(
        [preprocess(canvases.render_canvas(d, r)).image for d, r in zip(images, rng, strict=True)]
    )


def _auroc(positive, negative) -> float:
    """P(a digit scores above a non-digit), ties half: every pair counted (the golden value)."""
    p, n = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(np.mean(p > n) + 0.5 * np.mean(p == n))


@pytest.mark.parametrize(
    ("label", "suffix", "variant"),
    [("gate.onnx", ".onnx", "float32"), ("gate.int8.onnx", ".int8.onnx", "int8")],
)
def test_answers_measures_each_gates_drawing_rule_with_the_files_beside_it(
    gated_int8, gated_report, drawn, label, suffix, variant
):
    report, _ = gated_report
    assert list(report["drawing_rule"]) == ["gate.onnx", "gate.int8.onnx"]
    assert report["canvases"] == {"drawn": LIMIT, "refused": 0, "method": "mnist", "seed": 0}
    entry = report["drawing_rule"][label]
    rule = json.loads((gated_int8 / "gate.json").read_text())["drawing_rule"][variant]
    files = {n: Predictor(gated_int8 / f"{n}{suffix}") for n in ("mlp", "cnn", "gate")}
    assert entry["variant"] == variant and entry["rule"] == rule
    assert entry["sha256"] == {n: p.sha256 for n, p in files.items()}

    def scores(x):
        probabilities = [p.predict_batch(x) for p in files.values()]
        return contract.drawing_scores(probabilities[:2], probabilities[2])

    images, _ = mnist_eval.load_test_digits(LIMIT)
    others, kinds, _ = nondigits.heldout_inputs()
    test, other = scores(contract.to_model_input(images)), scores(others)
    below = rule["not_a_digit_below"]
    assert entry["test"]["not_a_digit"] == round(float(np.mean(test < below)), 6)
    assert entry["canvas"]["not_a_digit"] == round(float(np.mean(scores(drawn) < below)), 6)
    assert entry["caught"]["all"] == round(float(np.mean(other < below)), 6)
    assert entry["passed"] == np.flatnonzero(other >= below).tolist()
    assert entry["auroc"]["all"] == pytest.approx(_auroc(test, other), abs=1e-6)
    kinds = np.asarray(kinds)
    for kind in set(kinds):
        assert entry["auroc"][kind] == pytest.approx(_auroc(test, other[kinds == kind]), abs=1e-6)


def test_with_a_gate_the_table_and_the_picture_show_the_drawing_rule(
    gated_int8, gated_report, drawn
):
    report, out = gated_report
    assert list(report["models"])[-2:] == ["gate.onnx", "gate.int8.onnx"]  # the gate's own rows
    # Each file's own rule is counted on the same canvases.
    cnn = Predictor(gated_int8 / "cnn.onnx")
    said = contract.answers(cnn.predict_batch(drawn).max(-1), cnn.answer_rule) == "not a digit"
    assert report["models"]["cnn.onnx"]["canvas"]["not_a_digit"] == round(float(said.mean()), 6)
    assert report["models"]["gate.onnx"]["canvas"]["not_a_digit"] is None  # the toy gate: no rule
    assert "| canvases: not a digit |" in report["table"]
    for variant, label in (("float32", "gate.onnx"), ("int8", "gate.int8.onnx")):
        d = report["drawing_rule"][label]
        test, canvas = d["test"]["not_a_digit"], d["canvas"]["not_a_digit"]
        row = f"| drawing rule ({variant}: mlp + cnn + gate) | each file's | — | "
        row += f"{100 * test:.2f}% | — | {100 * canvas:.2f}% | {100 * d['caught']['all']:.1f}% |"
        assert row in report["table"], report["table"]
    # The picture shows what the float drawing rule lets through.
    assert answers.shown_passed(report)[1] == report["drawing_rule"]["gate.onnx"]["passed"]
    assert out.with_name("answers_passed.png").read_bytes().startswith(b"\x89PNG")


def test_a_gate_whose_rule_names_other_files_is_refused_as_the_page_refuses_it(
    gated_toy_dir, tmp_path
):
    folder = tmp_path / "models"
    shutil.copytree(gated_toy_dir, folder)
    retrained = toy_model_bytes(name="cnn", weights=upright_stroke_weights(1, 0.35))
    (folder / "cnn.onnx").write_bytes(retrained)  # re-exported since the gate was
    with pytest.raises(ModelLoadError, match="fitted with other model files"):
        answers.run([str(folder)], tmp_path / "answers.json", limit=LIMIT, workers=1, log=print)
    assert not (tmp_path / "answers.json").exists()


def test_the_canvases_are_canvas_evals_whatever_the_worker_count():
    images, _ = mnist_eval.load_test_digits(canvases.CHUNK + 10)  # two chunks: the pool
    alone, refused = canvases.drawn_digits(images, workers=1)
    pooled, refused_pooled = canvases.drawn_digits(images, workers=2)
    assert alone.shape == (len(images), 28, 28) and refused.dtype == bool
    np.testing.assert_array_equal(alone, pooled)
    np.testing.assert_array_equal(refused, refused_pooled)
    # canvas-eval's own worker, through both methods, gives the same `mnist` images.
    both = canvases._render_and_preprocess(images[:5], np.arange(5), 0)
    np.testing.assert_array_equal(both["images"]["mnist"], alone[:5])


def test_the_real_models_drawing_rule_rejects_few_digits_and_beats_the_cnn_alone(
    exported_models, tmp_path
):
    # 1-epoch models (measured: AUROC 0.965 against the cnn's own 0.899; 1.0% of the test
    # digits and of the canvases rejected, the rule fitted at 0.5% of the validation digits).
    out = tmp_path / "answers.json"
    report = answers.run([str(exported_models)], out, limit=500, workers=1, log=print)
    served = report["models"]["cnn.onnx"]["auroc"]["all"]
    for label in ("gate.onnx", "gate.int8.onnx"):
        rule = report["drawing_rule"][label]
        assert rule["auroc"]["all"] >= max(0.93, served + 0.03), label
        assert rule["test"]["not_a_digit"] <= 0.02, label
        assert rule["canvas"]["not_a_digit"] <= 0.03, label
