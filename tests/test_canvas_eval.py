"""Canvas accuracy: canvases look like a person's drawing; a small report runs end to end."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from flaxdigits.evaluation import canvases as canvas_eval
from flaxdigits.evaluation.canvases import render_canvas

# Floors for the 1-epoch exports of conftest.exported_models on the first 100 canvases (seed 0),
# a few points under what they scored there (development machine, AMD EPYC, 2026-12-02: CNN 98%
# `mnist` / 85% `seed`, MLP 99% / 77%, int8 within a point of float). A preprocessing change
# that costs either method a few points of accuracy fails here.
CANVAS_FLOORS = {"cnn": {"mnist": 0.95, "box": 0.80}, "mlp": {"mnist": 0.95, "box": 0.72}}


def test_canvases_are_large_seeded_and_black_on_white_or_transparent(mnist):
    kinds = set()
    for i in range(40):
        canvas = render_canvas(mnist.test_images[i], np.random.default_rng([0, i]))
        again = render_canvas(mnist.test_images[i], np.random.default_rng([0, i]))
        np.testing.assert_array_equal(canvas, again)
        h, w, c = canvas.shape
        assert 280 <= h <= 800 and 280 <= w <= 800 and canvas.dtype == np.uint8
        kinds.add(c)
        if c == 4:  # black strokes in alpha over a transparent canvas
            assert canvas[..., :3].max() == 0 and canvas[..., 3].max() == 255
            assert canvas[0, 0, 3] == 0 or canvas[-1, -1, 3] == 0
            ink = canvas[..., 3]
        else:
            assert (canvas[..., 0] == canvas[..., 2]).all() and canvas.max() == 255
            ink = 255 - canvas[..., 0]
        rows, cols = np.nonzero(ink)
        assert 0.25 * min(h, w) < max(np.ptp(rows), np.ptp(cols)) + 1  # a digit, not a speck
        assert len(np.unique(ink)) > 10  # anti-aliased edges
    assert kinds == {3, 4}


def test_report_on_100_digits(exported_models, tmp_path, capsys):
    out = tmp_path / "reports" / "canvas.json"
    returned = canvas_eval.run(exported_models, out, limit=100, workers=2)
    report = json.loads(out.read_text())
    assert json.loads(json.dumps(returned)) == report  # what was written is what was returned
    assert report["n"] == 100 and report["schema"] == canvas_eval.SCHEMA
    assert set(report["accuracy"]) == {"mlp", "mlp.int8", "cnn", "cnn.int8"}
    for by_method in report["accuracy"].values():
        assert set(by_method) == {"mnist", "box"}
    for name, by_method in report["accuracy"].items():
        for method, floor in CANVAS_FLOORS[name.split(".")[0]].items():
            assert by_method[method] >= floor, f"{name} `{method}`: {by_method[method]:.0%}"
    assert report["table"].startswith("| model |") and "| cnn |" in report["table"]
    assert report["table"] in capsys.readouterr().out


def test_missing_models_dir_is_a_clear_error_and_writes_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .onnx models"):
        canvas_eval.run(tmp_path, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


# ---- several model directories, one rendering ------------------------------------------------

PAIR_LIMIT = 24


@pytest.fixture(scope="module")
def two_dirs(tmp_path_factory, mnist):
    """Two model directories that read digits differently: (a) mlp 3 and cnn 8 for any ink;
    (b) a nearest-centroid linear classifier (mlp, and its int8 name) and cnn 7 for any ink."""
    from flaxdigits.core import contract
    from tests.support.toy_onnx import toy_model_bytes

    x = contract.scale_pixels(mnist.train_images[:5000]).reshape(-1, 784)
    y = mnist.train_labels[:5000]
    means = np.stack([x[y == d].mean(axis=0) for d in range(10)])  # (10, 784)
    centroid = (means.T, -0.5 * (means**2).sum(axis=1))
    a, b = tmp_path_factory.mktemp("canvas_a"), tmp_path_factory.mktemp("canvas_b")
    (a / "mlp.onnx").write_bytes(toy_model_bytes(name="mlp", ink_digit=3))
    (a / "cnn.onnx").write_bytes(toy_model_bytes(name="cnn", ink_digit=8))
    (b / "mlp.onnx").write_bytes(toy_model_bytes(name="mlp", weights=centroid))
    (b / "mlp.int8.onnx").write_bytes(toy_model_bytes(name="mlp", weights=centroid))
    (b / "cnn.onnx").write_bytes(toy_model_bytes(name="cnn", ink_digit=7))
    return a, b


def _without_seconds(report: dict) -> dict:
    return {key: value for key, value in report.items() if key != "seconds"}


def test_pairs_render_once_and_write_what_two_separate_runs_write(two_dirs, tmp_path, monkeypatch):
    a, b = two_dirs
    pools = []
    real_pool = canvas_eval.worker_pool
    monkeypatch.setattr(canvas_eval, "worker_pool", lambda n: pools.append(n) or real_pool(n))
    lines = []
    outs = [tmp_path / "pair" / "a.json", tmp_path / "pair" / "b.json"]
    returned = canvas_eval.run([a, b], outs, limit=PAIR_LIMIT, workers=2, log=lines.append)
    assert len(pools) == 1  # one rendering pass for both directories
    singles = [
        canvas_eval.run(d, tmp_path / "single" / f"{d.name}.json", limit=PAIR_LIMIT, workers=1)
        for d in (a, b)
    ]
    assert len(pools) == 3
    for out, report, single in zip(outs, returned, singles, strict=True):
        written = json.loads(out.read_text())
        assert written == json.loads(json.dumps(report))
        assert _without_seconds(written) == json.loads(json.dumps(_without_seconds(single)))
        assert set(written["seconds"]) == {"render_and_preprocess", "predict"}
    # each report holds its own directory's models, and they read the canvases differently
    assert set(returned[0]["accuracy"]) == {"mlp", "cnn"}
    assert set(returned[1]["accuracy"]) == {"mlp", "mlp.int8", "cnn"}
    assert all(p.startswith(str(b)) for p in returned[1]["models"].values())
    for report, directory in zip(returned, (a, b), strict=True):  # each names the bytes measured
        assert report["sha256"] == {
            stem: hashlib.sha256((directory / f"{stem}.onnx").read_bytes()).hexdigest()
            for stem in report["accuracy"]
        }
    centroid = returned[1]["accuracy"]["mlp"]["mnist"]
    assert centroid > 0.5 and centroid != returned[0]["accuracy"]["mlp"]["mnist"]
    assert (
        returned[0]["seconds"]["render_and_preprocess"]
        == (returned[1]["seconds"]["render_and_preprocess"])
    )
    assert [line for line in lines if line.endswith(".json")] == [
        line for line in lines if "(shared)" in line
    ]
    assert lines[-1].endswith(str(outs[1])) and returned[1]["table"] in lines


def test_pairs_that_do_not_match_or_a_missing_dir_write_nothing(two_dirs, tmp_path):
    a, b = two_dirs
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    with pytest.raises(ValueError, match="2 models directories but 1 reports"):
        canvas_eval.run([a, b], outs[:1], limit=2)
    with pytest.raises(ValueError, match="same report"):
        canvas_eval.run([a, b], [outs[0], outs[0]], limit=2)
    with pytest.raises(ValueError, match="lists of each"):
        canvas_eval.run([a, b], outs[0], limit=2)
    with pytest.raises(FileNotFoundError, match="no .onnx models"):  # before any rendering
        canvas_eval.run([a, tmp_path / "empty"], outs, limit=2)
    assert not any(o.exists() for o in outs)


def test_cli_pairs_write_both_reports_and_a_mismatch_is_one_line(two_dirs, tmp_path, capsys):
    from flaxdigits.cli.main import main

    a, b = two_dirs
    outs = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    args = ["canvas-eval", "--models", str(a), str(b), "--limit", "3", "--workers", "1"]
    assert main([*args, "--out", *outs]) == 0
    reports = [json.loads(open(o).read()) for o in outs]
    assert [set(r["accuracy"]) for r in reports] == [{"mlp", "cnn"}, {"mlp", "mlp.int8", "cnn"}]
    assert all(r["n"] == 3 for r in reports)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "c.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "one --out per directory" in err and "Traceback" not in err
    assert not (tmp_path / "c.json").exists()
