"""The drawing rule (issue 33): the gate and the served models decide together that a drawing is
"not a digit" (contract.drawing_scores, drawing_answers; serve/runtime/model_set.py), and every
way of serving answers by it: the page, /predict's JSON, `predict`; a rule fitted with other
files, or a gate without its rule, is refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from flaxdigits.core import contract
from flaxdigits.export.drawing_rule import check_gate_out
from flaxdigits.export.onnx_graph import ExportError
from flaxdigits.serve.page import views as page
from flaxdigits.serve.predict import predict_files
from flaxdigits.serve.runtime.model_set import ModelSet, load_models
from flaxdigits.serve.runtime.predictor import ModelLoadError, model_files
from flaxdigits.serve.runtime.preprocess import preprocess
from tests.support.drawings import LETTER_X, ONE, card_answer, strokes
from tests.support.toy_onnx import toy_model_bytes, write_gate

SHA = "ab" * 32


def flat(n=1):
    return np.full((n, 10), 0.1)


def sure(digit, p=0.91, n=1):
    out = np.full((n, 10), (1 - p) / 9)
    out[:, digit] = p
    return out


def test_the_score_is_the_smaller_of_the_gates_confidence_and_the_mean_of_all():
    # Both members sure of 4, the gate flat: the gate's 0.1 decides (the mean says 0.64).
    assert contract.drawing_scores([sure(4), sure(4)], flat())[0] == pytest.approx(0.1)
    # All three sure of 4: the mean's 0.91 and the gate's 0.91.
    assert contract.drawing_scores([sure(4), sure(4)], sure(4))[0] == pytest.approx(0.91)
    # The gate sure of 1, the members of 7: the mean's best class holds 0.61 of it.
    mean7 = (0.91 + 0.91 + 0.01) / 3
    assert contract.drawing_scores([sure(7), sure(7)], sure(1))[0] == pytest.approx(mean7)
    # Many drawings at once, one score each.
    members = np.stack([np.concatenate([sure(4), flat()])] * 2)
    assert contract.drawing_scores(members, np.concatenate([sure(4), sure(4)])).shape == (2,)


def test_the_drawing_answer_overrules_every_model_and_own_rejections_become_not_sure():
    rule = {"members": {"mlp": SHA}, "not_a_digit_below": 0.5, "validation_rejected": 0.005}
    answers = ["digit", "not sure", "not a digit"]
    low = contract.drawing_answers(answers, 0.49, rule)
    assert low.tolist() == ["not a digit"] * 3
    high = contract.drawing_answers(answers, 0.5, rule)
    assert high.tolist() == ["digit", "not sure", "not sure"]
    assert contract.drawing_answers(answers, 0.1, None).tolist() == answers
    many = contract.drawing_answers(
        [["digit", "digit"], ["not a digit", "digit"]], [0.9, 0.1], rule
    )
    assert many.tolist() == [["digit", "not a digit"], ["not sure", "not a digit"]]


@pytest.mark.parametrize(
    "change",
    [
        {"members": {}},
        {"members": {"gate": SHA}},
        {"members": {"mlp": "not a hash"}},
        {"members": {"mlp": SHA.upper()}},
        {"not_a_digit_below": 1.5},
        {"not_a_digit_below": True},
        {"validation_rejected": -0.1},
        {"extra": 1},
    ],
)
def test_a_bad_drawing_rule_is_refused(change):
    rule = {"members": {"mlp": SHA, "cnn": SHA}, "not_a_digit_below": 0.5}
    rule |= {"validation_rejected": 0.005}
    assert contract.check_drawing_rule(dict(rule)) == rule
    with pytest.raises(ValueError, match="drawing rule"):
        contract.check_drawing_rule(rule | change)


def test_a_letter_is_not_a_digit_for_the_page_and_its_api_and_a_one_is_a_one(gated_toy_dir):
    models = load_models(gated_toy_dir)
    assert (
        isinstance(models, ModelSet) and models.gate is not None and list(models) == ["mlp", "cnn"]
    )
    status, cards, _ = page.page_outputs(strokes(LETTER_X), "mnist", models)
    assert status == "Neither model thinks that is a digit."
    assert [card_answer(c) for c in cards] == ["not a digit", "not a digit"]
    result = page.predict_all(strokes(LETTER_X), "mnist", models)
    assert result["drawing"]["answer"] == "not a digit"
    assert result["drawing"]["score"] < result["drawing"]["not_a_digit_below"] == 0.5
    result = page.predict_all(strokes(ONE), "mnist", models)
    assert result["drawing"]["answer"] == "digit"
    assert {(m["digit"], m["answer"]) for m in result["models"].values()} == {(1, "digit")}


def test_the_pages_handlers_answer_by_the_gate_where_the_models_alone_say_digit(
    gate_decides_toy_dir, tmp_path
):
    """The page's event handlers and /predict (Handlers, as app.launch builds them) over
    members with no rule of their own: only the gate's rule can say "not a digit"."""
    from flaxdigits.serve.page.handlers import Handlers, load_predictors

    handlers = Handlers(load_predictors(gate_decides_toy_dir))
    _, status, *cards, _ = handlers.outputs_for("draw", strokes(LETTER_X), "mnist")
    assert status == "Neither model thinks that is a digit."
    assert [card_answer(c) for c in cards] == ["not a digit", "not a digit"]
    png = tmp_path / "letter.png"
    strokes(LETTER_X).save(png)
    result = handlers.predict(str(png), "mnist")
    assert result["drawing"]["answer"] == "not a digit"
    assert {m["answer"] for m in result["models"].values()} == {"not a digit"}


def test_the_gate_overrules_two_confident_models(tmp_path):
    """Members that read 3 from any ink (confident on a letter too) and a gate that reads only an
    upright stroke: the letter is "not a digit" although both members are sure of it."""
    for name in contract.MODEL_NAMES:
        (tmp_path / f"{name}.onnx").write_bytes(toy_model_bytes(name=name, ink_digit=3))
    write_gate(tmp_path)
    models = load_models(tmp_path)
    alone = {n: p.predict(preprocess(strokes(LETTER_X)).image) for n, p in models.items()}
    assert {p.digit for p in alone.values()} == {3}
    assert min(p.confidence for p in alone.values()) > 0.99
    result = page.predict_all(strokes(LETTER_X), "mnist", models)
    assert result["drawing"]["answer"] == "not a digit"
    assert {m["answer"] for m in result["models"].values()} == {"not a digit"}


def gated_copy(gated_toy_dir, tmp_path):
    directory = tmp_path / "models"
    shutil.copytree(gated_toy_dir, directory)
    return directory


def test_a_rule_fitted_with_other_files_is_refused(gated_toy_dir, tmp_path):
    directory = gated_copy(gated_toy_dir, tmp_path)
    (directory / "mlp.onnx").write_bytes(toy_model_bytes(name="mlp", ink_digit=5))
    with pytest.raises(ModelLoadError, match="fitted with other model files.*export the gate"):
        load_models(directory)


@pytest.mark.parametrize("damage", ["no manifest", "no rule", "no rule for float32", "bad rule"])
def test_a_gate_without_a_usable_rule_is_refused(gated_toy_dir, tmp_path, damage):
    directory = gated_copy(gated_toy_dir, tmp_path)
    manifest = directory / "gate.json"
    doc = json.loads(manifest.read_text())
    if damage == "no manifest":
        manifest.unlink()
    else:
        rules = doc["drawing_rule"]
        if damage == "no rule":
            del doc["drawing_rule"]
        elif damage == "no rule for float32":
            doc["drawing_rule"] = {"int8": rules["float32"]}
        else:
            rules["float32"]["not_a_digit_below"] = 2.0
        manifest.write_text(json.dumps(doc))
    with pytest.raises(ModelLoadError, match="gate"):
        load_models(directory)


def test_without_a_gate_every_model_answers_by_its_own_rule(answering_toy_dir):
    models = load_models(answering_toy_dir)
    assert models.gate is None
    result = page.predict_all(strokes(LETTER_X), "mnist", models)
    assert "drawing" not in result
    assert {m["answer"] for m in result["models"].values()} == {"not a digit"}


def test_predict_answers_by_the_drawing_rule_where_the_gate_lies_beside_the_model(
    gated_toy_dir, answering_toy_dir, tmp_path, capsys
):
    letter, one = tmp_path / "letter.png", tmp_path / "one.png"
    strokes(LETTER_X).save(letter)
    strokes(ONE).save(one)
    status = predict_files(gated_toy_dir / "cnn.onnx", [str(letter), str(one)], as_json=True)
    assert status == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["answer"], x["drawing"]["answer"]) for x in lines] == [
        ("not a digit", "not a digit"),
        ("digit", "digit"),
    ]
    assert predict_files(answering_toy_dir / "cnn.onnx", [str(letter)], as_json=True) == 0
    alone = json.loads(capsys.readouterr().out)
    assert "drawing" not in alone and alone["answer"] == "not a digit"


def test_predict_refuses_a_stale_gate_with_exit_two(gated_toy_dir, tmp_path, capsys):
    directory = gated_copy(gated_toy_dir, tmp_path)
    (directory / "cnn.onnx").write_bytes(toy_model_bytes(name="cnn", ink_digit=5))
    strokes(ONE).save(tmp_path / "one.png")
    assert predict_files(directory / "cnn.onnx", [str(tmp_path / "one.png")]) == 2
    assert "fitted with other model files" in capsys.readouterr().err


def test_model_files_leave_the_gate_out_unless_asked(gated_toy_dir):
    assert [p.name for p in model_files(gated_toy_dir)] == ["cnn.onnx", "mlp.onnx"]
    assert "gate.onnx" in [p.name for p in model_files(gated_toy_dir, gate=True)]


def test_only_a_gate_run_is_exported_as_the_gate(tmp_path):
    check_gate_out("gate", tmp_path / "gate.onnx")
    check_gate_out("robust", tmp_path / "cnn.onnx")
    with pytest.raises(ExportError, match="exported as gate.onnx"):
        check_gate_out("gate", tmp_path / "cnn.onnx")
    with pytest.raises(ExportError, match="the gate's"):
        check_gate_out("robust", tmp_path / "gate.onnx")


def test_the_exported_gate_carries_a_rule_for_each_variant_fitted_with_its_neighbours(
    exported_models,
):
    """make export's order (mlp, cnn, then the gate) on 1-epoch runs: a rule per variant naming
    the files beside it, 0.5% of the validation digits under it, and a model set that loads."""
    doc = json.loads((exported_models / "gate.json").read_text())
    for variant, suffix in (("float32", ".onnx"), ("int8", ".int8.onnx")):
        rule = contract.check_drawing_rule(doc["drawing_rule"][variant])
        models = load_models(exported_models, variant=variant)
        assert models.gate.path.name == f"gate{suffix}"
        assert rule["members"] == {n: models[n].sha256 for n in contract.MODEL_NAMES}
        assert rule["validation_rejected"] == pytest.approx(0.005, abs=0.001)
        assert 0.0 <= doc["drawing_rule_test_rejected"][variant] < 0.05
