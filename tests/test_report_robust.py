"""The report's robustness sections: headline numbers from robustness.json, canvas tables, and a
clear pointer to the command when a measurement is missing."""

from __future__ import annotations

import hashlib
import json

import pytest

from flaxdigits.report import robustness as report_robust

GRID = {
    "rotation": {"levels": [-45.0, -30.0, 0.0, 30.0, 45.0], "unit": "degrees"},
    "slant": {"levels": [-0.3, 0.0, 0.3], "unit": "shear"},
    "thickness": {"levels": [-1.0, -0.5, 0.0, 2.5], "unit": "px"},
}


def model(recipe: str, rotation, thickness) -> dict:
    return {
        "file": f"models/{recipe}/cnn.onnx",
        "sha256": hashlib.sha256(recipe.encode()).hexdigest(),
        "model": "cnn",
        "recipe": recipe,
        "variant": "float32",
        "test_accuracy_28x28": 0.99,
        "accuracy": {"rotation": rotation, "slant": [0.9, 0.99, 0.8], "thickness": thickness},
    }


@pytest.fixture
def reports(tmp_path):
    report = {
        "schema": "flaxdigits.robustness.v1",
        "n": 100,
        "grid": GRID,
        "models": {
            "cnn/robust/float32": model(
                "robust", [0.9, 0.97, 0.99, 0.95, 0.8], [0.1, 0.96, 0.99, 0.98]
            ),
            "cnn/original/float32": model(
                "original", [0.4, 0.8, 0.99, 0.7, 0.5], [0.1, 0.9, 0.99, 0.9]
            ),
        },
        "table": "FULL TABLE",
    }
    (tmp_path / "robustness.json").write_text(json.dumps(report))
    return tmp_path


def test_headline_averages_both_signs_and_skips_vanishing_strokes(reports):
    report = json.loads((reports / "robustness.json").read_text())
    values = report_robust.headline(report["models"]["cnn/robust/float32"], GRID)
    assert values["rotated ±30°"] == pytest.approx(0.96)
    assert values["rotated ±45°"] == pytest.approx(0.85)
    assert values["slanted ±0.3"] == pytest.approx(0.85)
    assert values["strokes +2.5 px"] == pytest.approx(0.98)
    assert values["thickness worst"] == pytest.approx(0.96)  # -1 px (0.1) is below the range


def _sections(out, seed_runs, robust_runs) -> str:
    measurements = report_robust.read_measurements(out)
    return "\n".join(report_robust.sections(measurements, out, seed_runs, robust_runs))


def test_sections_hold_the_tables_the_curves_and_the_bytes_measured(reports):
    text = _sections(reports, reports / "no-seed", None)
    assert "| cnn/robust/float32 | 99.00% | 96.00% | 85.00% |" in text
    assert "FULL TABLE" in text
    assert (reports / "robustness_rotation.png").read_bytes().startswith(b"\x89PNG")
    assert "![robustness_thickness.png](robustness_thickness.png)" in text
    assert "no measurement yet (`make canvas-eval`)" in text
    robust, seed = (hashlib.sha256(r.encode()).hexdigest() for r in ("robust", "original"))
    assert f"cnn/robust/float32 `{robust[:16]}…`, cnn/original/float32 `{seed[:16]}…`." in text
    measured = report_robust.measured_files(report_robust.read_measurements(reports))
    assert measured == {
        "robustness.json": {"cnn/robust/float32": robust, "cnn/original/float32": seed}
    }


def test_reports_that_name_no_bytes_are_quoted_for_nothing_and_say_to_measure_again(reports):
    report = json.loads((reports / "robustness.json").read_text())
    del report["models"]["cnn/original/float32"]["sha256"]  # one entry as written before
    (reports / "robustness.json").write_text(json.dumps(report))
    canvas = {"n": 50, "models": {"cnn": "models/cnn.onnx"}, "accuracy": {"cnn": {"mnist": 0.5}}}
    canvas["table"] = "CANVAS TABLE"
    (reports / "canvas_accuracy.json").write_text(json.dumps(canvas))
    text = _sections(reports, reports, None)
    for quoted in ("99.00%", "FULL TABLE", "CANVAS TABLE", ".png", "sha256: "):
        assert quoted not in text, quoted
    assert "re-run `flaxdigits robustness` (`make robustness`)" in text
    assert "robust recipe: canvas_accuracy.json names no model bytes" in text
    assert "re-run `flaxdigits canvas-eval` (`make canvas-eval`)" in text
    assert not list(reports.glob("*.png"))
    assert report_robust.measured_files(report_robust.read_measurements(reports)) == {}


def test_a_missing_measurement_names_the_command(tmp_path):
    text = _sections(tmp_path, tmp_path, tmp_path)
    assert "`flaxdigits robustness`" in text and "`make train`" in text
