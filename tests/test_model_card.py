"""The model card quotes a measured figure only for the exact bytes it was measured on: reports
made by `flaxdigits canvas-eval` and `flaxdigits robustness`, then a model retrained in a copied
folder or in place (its file's mtime saying nothing about its bytes), or a report too old to
name any bytes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from flaxdigits.evaluation import canvases, robustness
from flaxdigits.export.release import build_release
from flaxdigits.release.reader import read_release
from tests.support.release_models import DIGIT, write_models

LIMIT = 20  # test digits: the toys read any ink as one digit, so a few show each share
RETRAINED = {**DIGIT, "cnn": 7}  # the cnn reads another digit: other bytes, other figures
FILES = {name: (f"{name}.onnx", f"{name}.int8.onnx") for name in DIGIT}


def _measure(models: Path, reports: Path) -> Path:
    """The canvas and robustness reports of models' files, as the commands write them."""
    canvases.run(models, reports / "canvas_accuracy.json", limit=LIMIT, workers=1, log=print)
    robustness.run([models], reports / "robustness.json", limit=LIMIT, workers=1, log=print)
    return reports


def _card(models: Path, reports: Path, out: Path) -> str:
    path = build_release(models, out, reports_dir=reports, latency=False, log=print)
    return read_release(path).files["MODEL_CARD.md"].decode()


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _rows(reports: Path, name: str) -> list[str]:
    """Every card row that quotes the reports' figures for model `name`'s two files."""
    canvas = json.loads((reports / "canvas_accuracy.json").read_text())
    robust = json.loads((reports / "robustness.json").read_text())
    rows = []
    for file, variant in zip(FILES[name], ("float32", "int8"), strict=True):
        cells = [_pct(a) for a in canvas["accuracy"][file[: -len(".onnx")]].values()]
        rows.append(f"| {file} | " + " | ".join(cells) + " |")
        model = robust["models"][f"{name}/robust/{variant}"]
        for by_level in model["accuracy"].values():
            rows.append(f"| {file} | " + " | ".join(_pct(a) for a in by_level) + " |")
    return rows


def _retrain_cnn(models: Path, tmp_path: Path, before: float) -> None:
    """Put a retrained cnn (float, int8, manifest) into models, copied with its own mtime (cp -p)
    from before the reports were written: the mtime says the reports are newer."""
    retrained = write_models(tmp_path / "retrained", RETRAINED)
    for file in (*FILES["cnn"], "cnn.json"):
        os.utime(retrained / file, (before, before))
        shutil.copy2(retrained / file, models / file)


@pytest.mark.parametrize("where", ["copied folder", "in place"])
def test_a_retrained_model_quotes_none_of_the_old_figures_the_untouched_one_keeps_them(
    where, tmp_path
):
    measured = write_models(tmp_path / "models")
    before = (measured / "cnn.onnx").stat().st_mtime - 3600
    reports = _measure(measured, tmp_path / "reports")
    models = measured
    if where == "copied folder":
        models = tmp_path / "copy" / "models"
        shutil.copytree(measured, models)
    _retrain_cnn(models, tmp_path, before)
    card = _card(models, reports, tmp_path / "dist")
    for row in _rows(reports, "mlp"):
        assert row in card, row
    for file in FILES["cnn"]:
        assert f"| {file} |" not in card, file  # no figure of the old cnn's bytes
    assert "not measured for these files" in card
    # The measured folder's cnn still has its figures, wherever the folder is.
    if where == "copied folder":
        card = _card(measured, reports, tmp_path / "dist-measured")
        for row in _rows(reports, "mlp") + _rows(reports, "cnn"):
            assert row in card, row


def test_reports_that_name_no_bytes_are_quoted_for_none_and_say_to_measure_again(tmp_path):
    models = write_models(tmp_path / "models")
    reports = _measure(models, tmp_path / "reports")
    card = _card(models, reports, tmp_path / "dist")
    assert all(row in card for row in _rows(reports, "mlp") + _rows(reports, "cnn"))
    # The same reports as written before they recorded the sha256 of what they measured.
    canvas = json.loads((reports / "canvas_accuracy.json").read_text())
    canvas.pop("sha256", None)
    (reports / "canvas_accuracy.json").write_text(json.dumps(canvas))
    robust = json.loads((reports / "robustness.json").read_text())
    for model in robust["models"].values():
        model.pop("sha256", None)
    (reports / "robustness.json").write_text(json.dumps(robust))
    card = _card(models, reports, tmp_path / "dist-old")
    for file in (*FILES["mlp"], *FILES["cnn"]):
        assert f"| {file} |" not in card, file
    assert "re-run `flaxdigits canvas-eval`" in card
    assert "re-run `flaxdigits robustness`" in card


def test_an_unreadable_report_is_named_and_quoted_for_nothing(tmp_path):
    models = write_models(tmp_path / "models")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "canvas_accuracy.json").write_text('{"sha256": ')
    card = _card(models, reports, tmp_path / "dist")
    assert (
        f"Canvas accuracy: not measured for these files ({reports}/canvas_accuracy.json is " in card
    )
    assert "Robustness: not measured for these files (no reports/robustness.json)." in card


def test_a_level_a_report_lacks_is_shown_as_not_available(tmp_path):
    models = write_models(tmp_path / "models")
    reports = tmp_path / "reports"
    reports.mkdir()
    digest = hashlib.sha256((models / "mlp.onnx").read_bytes()).hexdigest()
    robust = {
        "n": 10,
        "grid": {"rotation": {"levels": [0.0, 15.0], "unit": "deg"}, "slant": {"levels": [0.3]}},
        "models": {"mlp": {"sha256": digest, "accuracy": {"rotation": [0.9]}}},
    }
    (reports / "robustness.json").write_text(json.dumps(robust))
    card = _card(models, reports, tmp_path / "dist")
    assert "| mlp.onnx | 90.00% | n/a |" in card and "| mlp.onnx | n/a |" in card


def _answers(file: str, rejected: float) -> dict:
    """A manifest entry's "answers", as export measures them (ECE before: float files only)."""
    entry = {"ece": 0.0072, "not_a_digit": rejected, "not_sure": 0.0131}
    entry["digit_answers_accuracy"] = 0.995
    if ".int8." not in file:
        entry["ece_before_calibration"] = 0.0234
    return entry


MEASURED = {
    file: _answers(file, 0.0041 if "mlp" in file else 0.0052)
    for pair in FILES.values()
    for file in pair
}


def _answers_report(models: Path, reports: Path, files: tuple[str, ...]) -> None:
    """reports/answers.json as `flaxdigits answers` writes it, for `files` of models."""
    entries = {}
    for k, file in enumerate(files):
        digest = hashlib.sha256((models / file).read_bytes()).hexdigest()
        entries[file] = {
            "sha256": digest,
            "auroc": {"all": 0.9871 - k / 100, "doodle": 0.9954, "font": 0.9765},
            "caught": {"all": 0.912, "doodle": 0.975, "font": 0.85},
        }
    reports.mkdir(exist_ok=True)
    doc = {"heldout": {"count": 1234, "kinds": {"doodle": 480, "font": 754}}, "models": entries}
    (reports / "answers.json").write_text(json.dumps(doc))


def test_the_card_states_each_files_answer_rule_its_rejections_and_calibration(tmp_path):
    models = write_models(tmp_path / "models", answers=MEASURED)
    reports = tmp_path / "reports"
    _answers_report(models, reports, ("mlp.onnx", "cnn.onnx"))
    card = _card(models, reports, tmp_path / "dist")
    assert "## Answers: 'not a digit' and 'not sure'" in card
    for row in (
        "| models/mlp.onnx | 1.432 | 45.67% | 80.00% | 0.50% | 0.41% | 1.31% | 2.34% → 0.72% |",
        "| models/mlp.int8.onnx | 1.432 | 45.67% | 80.00% | 0.50% | 0.41% | 1.31% | n/a → 0.72% |",
        "| models/cnn.onnx | 1.123 | 61.23% | 80.00% | 0.48% | 0.52% | 1.31% | 2.34% → 0.72% |",
    ):
        assert row in card, row
    # Against the held-out non-digits: only the files answers.json measured, by their bytes.
    assert "1,234 held-out non-digits (doodle 480, font 754)" in card
    assert "| mlp.onnx | 0.9871 | 91.2% | 0.9954 | 0.9765 | 97.5% | 85.0% |" in card
    assert "| cnn.onnx | 0.9771 | 91.2% |" in card
    assert "| mlp.int8.onnx | 0.98" not in card
    assert "Non-digit detection of mlp.int8.onnx, cnn.int8.onnx: not measured" in card
    assert "exported before answer rules" not in card


def test_files_without_a_rule_say_so_and_no_report_quotes_nothing(tmp_path):
    models = write_models(tmp_path / "models")
    card = _card(models, tmp_path / "no-reports", tmp_path / "dist")
    assert "## Answers: 'not a digit' and 'not sure'" in card
    for file in (*FILES["mlp"], *FILES["cnn"]):
        assert (
            f"- models/{file}: no answer rule (exported before answer rules): every answer is a "
            "digit, its confidence the plain softmax." in card
        ), file
    assert "| temperature |" not in card
    assert "Non-digit detection: not measured for these files (no reports/answers.json)." in card


def _drawing_entry(models: Path, suffix: str, figures: dict) -> dict:
    """answers.json's drawing rule entry of the files NAME{suffix} in models."""
    files = {n: f"{n}{suffix}" for n in ("mlp", "cnn", "gate")}
    digests = {n: hashlib.sha256((models / f).read_bytes()).hexdigest() for n, f in files.items()}
    return {"files": files, "sha256": digests} | figures


def test_with_a_gate_the_card_explains_the_drawing_rule_and_quotes_it_for_these_bytes(tmp_path):
    from tests.test_release_gate import BELOW, write_gate

    models = write_gate(write_models(tmp_path / "models", answers=MEASURED))
    reports = tmp_path / "reports"
    _answers_report(models, reports, ("mlp.onnx", "cnn.onnx"))
    doc = json.loads((reports / "answers.json").read_text())
    figures = {
        "test": {"not_a_digit": 0.0058},
        "canvas": {"not_a_digit": 0.0095},
        "caught": {"all": 0.785},
        "auroc": {"all": 0.9928},
    }
    doc["drawing_rule"] = {
        "gate.onnx": _drawing_entry(models, ".onnx", figures),
        # int8: measured with another cnn than the one released, so not these files together
        "gate.int8.onnx": _drawing_entry(models, ".int8.onnx", figures)
        | {"sha256": {"mlp": "0" * 64, "cnn": "1" * 64, "gate": "2" * 64}},
    }
    (reports / "answers.json").write_text(json.dumps(doc))
    card = _card(models, reports, tmp_path / "dist")
    assert "With them, the gate (models/gate.onnx, models/gate.int8.onnx):" in card
    assert "| models/gate.int8.onnx | int8 |" in card  # the files table
    assert "| gate | Conv 32 3x3" in card and "| 542,230 | gate | 10 |" in card
    assert "## Drawing rule: 'not a digit' from the models together" in card
    assert "the smaller of the gate's confidence" in card
    assert "fitted on the validation digits with these very" in card
    assert "the digits shown are mlp's and cnn's own" in card
    assert "| float32 | 42.82% | 0.50% | 0.58% | 0.95% | 78.5% | 0.9928 |" in card
    assert f"| int8 | {100 * BELOW['int8']:.2f}% | 0.50% | n/a | n/a | n/a | n/a |" in card
    assert "The drawing rule's figures, int8: not measured for these files" in card
    # No answers.json: the thresholds from the gate's manifest, no figure.
    card = _card(models, tmp_path / "no-reports", tmp_path / "dist-none")
    assert "| float32 | 42.82% | 0.50% | n/a |" in card
    assert "The drawing rule's figures: not measured for these files (no reports/answers" in card


def test_without_a_gate_the_card_has_no_drawing_rule(tmp_path):
    card = _card(write_models(tmp_path / "models", answers=MEASURED), tmp_path, tmp_path / "d")
    assert "Drawing rule" not in card and "gate" not in card
