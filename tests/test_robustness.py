"""Robustness report: end to end on toy models (no training), labels from metadata, errors, the
CLI, the plots; and on the real 1-epoch exports, clean and rotated accuracy."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flaxdigits.cli.main import main
from flaxdigits.core import contract
from flaxdigits.evaluation import robustness
from flaxdigits.evaluation.distort import DISTORTIONS, recentre
from flaxdigits.report.plots import plot
from flaxdigits.serve.runtime.predictor import model_files
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError
from tests.support.toy_onnx import toy_model_bytes

N = 50
SMALL_GRID = {"rotation": (0.0, 45.0), "thickness": (-1.0, 0.0)}


@pytest.fixture(scope="module")
def centroid(mnist) -> tuple[np.ndarray, np.ndarray]:
    """A nearest-centroid classifier of MNIST as a linear layer: weight (784, 10), bias (10,);
    no training, and sensitive to rotation."""
    x = contract.scale_pixels(mnist.train_images).reshape(-1, 784)
    means = np.stack([x[mnist.train_labels == d].mean(axis=0) for d in range(10)])  # (10, 784)
    return means.T, -0.5 * (means**2).sum(axis=1)  # argmax = the nearest class mean


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, centroid) -> Path:
    """mlp.onnx: the centroid classifier, no recipe or variant metadata; cnn.onnx: 4 for any
    image, blank or not, recipe robust; cnn.int8.onnx: the same, its variant known from its
    name only."""
    directory = tmp_path_factory.mktemp("robustness_models")
    (directory / "mlp.onnx").write_bytes(toy_model_bytes(name="mlp", weights=centroid))
    always_4 = (np.zeros((784, 10)), np.eye(10)[4])
    robust = {contract.META_RECIPE: "robust", contract.META_VARIANT: "float32"}
    fours = toy_model_bytes(name="cnn", weights=always_4, metadata=robust)
    (directory / "cnn.onnx").write_bytes(fours)
    (directory / "cnn.int8.onnx").write_bytes(toy_model_bytes(name="cnn", weights=always_4))
    return directory


@pytest.fixture(scope="module")
def report_and_log(models_dir, tmp_path_factory):
    """run() over models_dir on the first N test digits, the whole grid: (report, written JSON,
    logged lines)."""
    out = tmp_path_factory.mktemp("robustness_report") / "reports" / "robustness.json"
    lines = []
    report = robustness.run([models_dir], out, limit=N, workers=2, log=lines.append)
    return report, json.loads(out.read_text()), lines


def served_inputs(digits: np.ndarray, name: str, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The deformed, re-centred digits (N, 784) float in [0, 1], made one at a time, and which
    of them the served preprocessing refuses as empty (zeros in their place)."""
    inputs, refused = np.zeros((len(digits), 784)), np.zeros(len(digits), bool)
    for i, digit in enumerate(digits):
        try:
            inputs[i] = recentre(DISTORTIONS[name](digit, level)).ravel() / 255
        except EmptyCanvasError:
            refused[i] = True
    return inputs, refused


def test_report_holds_every_model_distortion_and_level_and_is_what_was_written(report_and_log):
    report, written, lines = report_and_log
    assert json.loads(json.dumps(report)) == written
    assert report["schema"] == robustness.SCHEMA and report["n"] == N
    assert {name: spec["levels"] for name, spec in report["grid"].items()} == {
        name: list(levels) for name, levels in robustness.GRID.items()
    }
    assert list(report["models"]) == [
        "mlp/original/float32",
        "cnn/original/int8",
        "cnn/robust/float32",
    ]
    for model in report["models"].values():
        assert set(model["accuracy"]) == set(robustness.GRID)
        for name, levels in robustness.GRID.items():
            assert len(model["accuracy"][name]) == len(levels)
    assert report["machine"]["workers"] == 2 and report["machine"]["platform"]
    assert report["seconds"]["total"] >= report["seconds"]["predict"] >= 0
    assert [line.split(":")[0] for line in lines[: len(robustness.GRID)]] == list(robustness.GRID)
    assert report["table"] in lines and lines[-1].endswith("robustness.json")
    assert "| cnn/robust/float32 | " in report["table"]
    for model in report["models"].values():  # each names the bytes it measured
        assert model["sha256"] == hashlib.sha256(Path(model["file"]).read_bytes()).hexdigest()


def test_every_accuracy_matches_a_digit_by_digit_computation_a_refused_one_wrong(
    report_and_log, mnist, centroid
):
    report, _, _ = report_and_log
    digits, labels = mnist.test_images[:N], mnist.test_labels[:N]
    weight, bias = centroid
    nearest = report["models"]["mlp/original/float32"]
    fours = report["models"]["cnn/robust/float32"]  # 4 for any image, a refused one too
    assert fours["test_accuracy_28x28"] == np.mean(labels == 4)
    for name, levels in robustness.GRID.items():
        for i, level in enumerate(levels):
            inputs, refused = served_inputs(digits, name, level)
            assert report["refused_empty"][name][i] == refused.sum(), (name, level)
            assert fours["accuracy"][name][i] == np.mean((labels == 4) & ~refused), (name, level)
            right = ((inputs @ weight + bias).argmax(axis=1) == labels) & ~refused
            assert nearest["accuracy"][name][i] == pytest.approx(right.mean(), abs=1 / N)
    # thinned by 1 px per edge, some 4s are refused in the first 50: they must count as wrong
    assert report["refused_empty"]["thickness"][0] > 0
    assert fours["accuracy"]["thickness"][0] < fours["test_accuracy_28x28"]


def test_rotation_lowers_the_accuracy_of_a_rotation_sensitive_classifier(report_and_log):
    centroid = report_and_log[0]["models"]["mlp/original/float32"]
    by_angle = dict(zip(robustness.GRID["rotation"], centroid["accuracy"]["rotation"], strict=True))
    # measured on 1000 digits: 78% upright, 39% at 30 degrees, 22% at 45
    assert by_angle[0.0] > 0.6
    assert by_angle[0.0] == pytest.approx(centroid["test_accuracy_28x28"], abs=0.06)
    assert by_angle[45.0] < by_angle[30.0] < by_angle[15.0] < by_angle[0.0]
    assert by_angle[-45.0] < by_angle[0.0] - 0.3 and by_angle[45.0] < by_angle[0.0] - 0.3


def test_any_worker_count_gives_the_same_accuracies(report_and_log, models_dir):
    report = report_and_log[0]
    again = robustness.evaluate_robustness(
        model_files(models_dir), limit=N, workers=1, grid=SMALL_GRID, log=lambda line: None
    )
    for label, model in again["models"].items():
        for name, levels in SMALL_GRID.items():
            accuracies = report["models"][label]["accuracy"][name]
            full = dict(zip(robustness.GRID[name], accuracies, strict=True))
            assert model["accuracy"][name] == [full[level] for level in levels]


def test_models_are_labelled_by_their_metadata_and_a_shared_label_is_refused(models_dir, tmp_path):
    (tmp_path / "mlp.onnx").write_bytes((models_dir / "mlp.onnx").read_bytes())
    paths = [models_dir / "mlp.onnx", tmp_path / "mlp.onnx"]
    with pytest.raises(ValueError, match="are both mlp/original/float32") as caught:
        robustness.evaluate_robustness(paths, limit=1, grid=SMALL_GRID, log=print)
    assert str(tmp_path) in str(caught.value)


def test_missing_or_empty_model_dirs_and_bad_arguments_raise_and_write_nothing(
    models_dir, tmp_path
):
    out = tmp_path / "r.json"
    with pytest.raises(FileNotFoundError, match="no such models directory"):
        robustness.run([models_dir, tmp_path / "nope"], out)
    with pytest.raises(FileNotFoundError, match="no .onnx models"):
        robustness.run([models_dir, tmp_path], out)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        robustness.run([models_dir], out, limit=0)
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match="no .onnx models"):
        robustness.evaluate_robustness([], limit=1)
    with pytest.raises(ValueError, match="unknown distortions"):
        robustness.evaluate_robustness([models_dir / "mlp.onnx"], grid={"blur": (1.0,)})


def test_cli_writes_the_report_and_prints_only_what_run_logs(toy_dir, tmp_path, capsys):
    out = tmp_path / "robustness.json"
    args = ["robustness", "--models", str(toy_dir), "--out", str(out), "--limit", "5"]
    assert main([*args, "--workers", "1"]) == 0
    printed = capsys.readouterr()
    report = json.loads(out.read_text())
    assert report["n"] == 5 and list(report["models"]) == [
        "mlp/original/float32",
        "cnn/original/float32",
    ]
    assert report["table"] in printed.out and printed.err == ""
    assert printed.out.startswith("rotation: 7 levels x 5 digits")
    assert printed.out.splitlines()[-1].endswith(f"-> {out}")


def test_cli_with_a_missing_models_dir_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "robustness.json"
    assert main(["robustness", "--models", str(tmp_path / "nope"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such models directory" in err and "Traceback" not in err
    assert not out.exists()


def test_plots_draw_accuracy_against_rotation_and_thickness(report_and_log, tmp_path):
    report = report_and_log[0]
    paths = plot(report, tmp_path / "plots")
    assert [p.name for p in paths] == ["robustness_rotation.png", "robustness_thickness.png"]
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 400
    with pytest.raises(ValueError, match="not a flaxdigits.robustness.v1 report"):
        plot({**report, "schema": "other"}, tmp_path)
    with pytest.raises(ValueError, match="has no"):
        plot(report, tmp_path, distortions=("blur",))


def test_the_real_models_clean_accuracy_and_what_45_degrees_costs_them(exported_models):
    report = robustness.evaluate_robustness(
        model_files(exported_models), grid={"rotation": (-45.0, 0.0, 45.0)}, log=print
    )
    assert report["n"] == 10_000 and len(report["models"]) == 4
    at_45 = {}
    for label, model in report["models"].items():
        upright = model["accuracy"]["rotation"][1]
        at_45[label] = np.mean(model["accuracy"]["rotation"][::2])
        meta = float(_metadata(model["file"])[contract.META_TEST_ACCURACY])
        assert model["test_accuracy_28x28"] == pytest.approx(meta, abs=5e-5), label
        # through the canvas, its resampling and the served re-centring, upright digits lose
        # little (measured 0.27-0.51 pt)
        assert upright == pytest.approx(model["test_accuracy_28x28"], abs=0.01), label
        # 1-epoch seed models, measured: MLP 95.4% upright, 33% at +-45; CNN 97.5%, 41%
        assert model["recipe"] == "original"
        assert at_45[label] < upright - 0.4, label
    assert at_45["cnn/original/float32"] > at_45["mlp/original/float32"] + 0.03
    assert report["refused_empty"]["rotation"] == [0, 0, 0]


def _metadata(path: str) -> dict[str, str]:
    from flaxdigits.serve.runtime.predictor import Predictor

    return Predictor(path).metadata


# ---- identical levels are scored once ---------------------------------------------------------


class _Counting:
    """A stand-in Predictor: the class of each image is its total ink mod 10; counts calls."""

    def __init__(self):
        self.calls = 0
        self.answer_rule = None  # a file without a rule: no "not a digit" share

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.eye(10)[np.rint(x.reshape(len(x), -1).sum(axis=1) * 255).astype(int) % 10]


def test_a_level_byte_identical_to_a_scored_one_reuses_its_scores_a_changed_one_is_scored():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    ink = base.reshape(20, -1).sum(axis=1)
    labels = np.where(np.arange(20) < 10, ink, ink + 1) % 10  # right on the first half
    one_pixel = base.copy()
    one_pixel[3, 5, 5] ^= 1  # the ink of digit 3 off by one: its predicted class changes
    no_refusal, one_refusal = np.zeros(20, bool), np.zeros(20, bool)
    one_refusal[7] = True
    images = np.stack([base, base.copy(), one_pixel, base])
    refused = np.stack([no_refusal, no_refusal, no_refusal, one_refusal])
    model = _Counting()
    loaded = {"m/original/float32": (model, {}), "n/original/float32": (_Counting(), {})}
    known: dict = {}
    scores, shares, scored = robustness._score(loaded, images, refused, labels, known)
    assert shares["m/original/float32"] == [None] * 4
    # level 1 repeats level 0's bytes; level 2 differs in one pixel, level 3 in one refusal
    assert scored == 3 and model.calls == 3 and len(known) == 3
    assert scores["m/original/float32"] == scores["n/original/float32"]
    assert scores["m/original/float32"] == [0.5, 0.5, 0.45, 0.45]
    # a later distortion's identical level (the identity of another) reuses them too
    again, _, scored = robustness._score(loaded, images[:1], refused[:1], labels, known)
    assert scored == 0 and model.calls == 3 and again["m/original/float32"] == [0.5]
    # the key is the level's bytes: equal arrays, equal keys; any changed byte, a new key
    key = robustness.level_key(base, no_refusal)
    assert key == robustness.level_key(base.copy(), no_refusal.copy())
    assert key != robustness.level_key(one_pixel, no_refusal)
    assert key != robustness.level_key(base, one_refusal)
    assert key != robustness.level_key(base[:10], no_refusal[:10])


def test_identity_levels_and_undone_shifts_are_predicted_once_each_reported_each(
    models_dir, mnist, monkeypatch
):
    from flaxdigits.serve.runtime.predictor import Predictor

    digits = mnist.test_images[:N]
    identity = served_inputs(digits, "rotation", 0.0)[0]
    for name, level in (("slant", 0.0), ("translation", -4.0), ("translation", 4.0)):
        np.testing.assert_array_equal(served_inputs(digits, name, level)[0], identity)
    assert not np.array_equal(served_inputs(digits, "rotation", 15.0)[0], identity)
    sizes = []
    real = Predictor.predict_batch
    monkeypatch.setattr(
        Predictor, "predict_batch", lambda self, x: sizes.append(len(x)) or real(self, x)
    )
    grid = {"rotation": (0.0, 15.0), "translation": (-4.0, 0.0, 4.0), "slant": (0.0,)}
    lines = []
    report = robustness.evaluate_robustness(
        model_files(models_dir), limit=N, workers=2, grid=grid, log=lines.append
    )
    # 3 models x (the clean digits + 2 distinct levels: the identity and 15 degrees)
    assert sizes == [N] * 3 * 3
    assert lines[1].startswith(f"translation: 3 levels x {N} digits, 3 reused")
    assert lines[2].startswith(f"slant: 1 levels x {N} digits, 1 reused")
    for model in report["models"].values():
        upright = model["accuracy"]["rotation"][0]
        assert model["accuracy"]["translation"] == [upright] * 3
        assert model["accuracy"]["slant"] == [upright]
    for header in ("28x28 | 0 | 15 |", "28x28 | -4 | 0 | 4 |", "28x28 | 0 |\n"):
        assert header in report["table"]  # every level in the table, reused or not


def test_model_files_may_be_named_one_by_one_beside_directories(models_dir, toy_dir, tmp_path):
    out = tmp_path / "r.json"
    report = robustness.run([toy_dir, models_dir / "cnn.onnx"], out, limit=3, log=lambda _: None)
    assert list(report["models"]) == [
        "mlp/original/float32",
        "cnn/original/float32",
        "cnn/robust/float32",
    ]
    assert json.loads(out.read_text())["models"]["cnn/robust/float32"]["file"] == str(
        models_dir / "cnn.onnx"
    )
    out.unlink()
    with pytest.raises(FileNotFoundError, match="no such model file"):
        robustness.run([toy_dir, models_dir / "nope.onnx"], out, limit=3)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not an .onnx model file"):
        robustness.run([toy_dir, tmp_path / "notes.txt"], out, limit=3)
    assert not out.exists()


class _Unsure(_Counting):
    """_Counting's classes, at confidence 0.3 for images whose ink is even, else 1."""

    def __init__(self):
        super().__init__()
        self.answer_rule = {"not_a_digit_below": 0.5, "not_sure_below": 0.8}

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        probs = super().predict_batch(x)
        ink = np.rint(x.reshape(len(x), -1).sum(axis=1) * 255).astype(int)
        return np.where((ink % 2 == 0)[:, None], probs * 0.3 + (1 - probs) * 0.7 / 9, probs)


def test_each_level_reports_the_share_its_rule_answers_not_a_digit_refusals_left_out():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (1, 40, 28, 28), dtype=np.uint8)
    ink = images[0].reshape(40, -1).astype(int).sum(axis=1)
    refused = np.zeros((1, 40), bool)
    refused[0, :10] = True
    loaded = {"m/robust/float32": (_Unsure(), {})}
    _, shares, _ = robustness._score(loaded, images, refused, ink % 10, {})
    expected = float(np.mean(ink[10:] % 2 == 0))  # of the 30 canvases not refused
    assert shares["m/robust/float32"] == [expected] and 0 < expected < 1
