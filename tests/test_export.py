"""ONNX export: the contract, parity with JAX on all 10k test images, int8, errors.

The exports come from the shared `exported_models` fixture (1-epoch runs of both models, with
--int8), built once per session; nothing here writes into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from flaxdigits.cli.main import main
from flaxdigits.core import contract
from flaxdigits.export import onnx_export, onnx_graph
from flaxdigits.export.onnx_export import ExportError, export_run
from flaxdigits.runs import load_run
from flaxdigits.serve.runtime import session as onnxrt
from flaxdigits.training import checkpoint
from flaxdigits.training.checkpoint import CheckpointError
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.state import init_state

NAMES = contract.MODEL_NAMES
FILES = tuple(f"{name}{variant}.onnx" for name in NAMES for variant in ("", ".int8"))
PARAMS = {"mlp": 101_770, "cnn": 542_230}


@pytest.fixture(scope="module")
def test_images(mnist) -> np.ndarray:
    """The 10,000 test images as model input: float32 (N, 28, 28, 1) in [0, 1]."""
    return contract.to_model_input(mnist.test_images)


@pytest.fixture(scope="module")
def jax_reference(trained_runs, mnist, exported_models) -> dict[str, dict]:
    """Accuracy and probabilities of each trained JAX model on the 10k test images; the
    probabilities calibrated as the exported graph computes them, softmax(logits / T), from the
    JAX model's own logits and the temperature of the file's answer rule."""
    out = {}
    for name, run_dir in trained_runs.items():
        run = load_run(run_dir)
        out[name] = run.evaluate(mnist.test_images, mnist.test_labels)
        t = manifest(exported_models, name)["answer_rule"]["temperature"]
        logits = run.logits(mnist.test_images).astype(np.float64) / t
        p = np.exp(logits - logits.max(-1, keepdims=True))
        out[name]["probabilities"] = p / p.sum(-1, keepdims=True)
    return out


def manifest(models_dir, name) -> dict:
    return json.loads((models_dir / f"{name}.json").read_text())


def outputs_left(directory) -> list[str]:
    """Anything an export may have left: models, manifests, side files, temp files."""
    if not directory.exists():
        return []
    return sorted(
        p.name for p in directory.iterdir() if p.suffix in (".onnx", ".json", ".data", ".tmp")
    )


# ------------------------------------------------------------------------------ the contract


@pytest.mark.parametrize("file", FILES)
def test_file_is_self_contained_valid_onnx_with_the_spec_io(exported_models, file):
    path = exported_models / file
    model = onnx.load_model(path, load_external_data=False)
    onnx.checker.check_model(model, full_check=True)
    assert not list(exported_models.glob("*.data"))
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in model.graph.initializer)
    assert not any(t.external_data for t in model.graph.initializer)

    assert [(o.domain, o.version) for o in model.opset_import] == [("", onnx_graph.OPSET)]
    assert onnx_graph.OPSET <= contract.MAX_OPSET
    assert model.ir_version <= contract.MAX_IR_VERSION

    (inp,) = model.graph.input
    assert inp.name == contract.INPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[0].dim_param and [d.dim_value for d in in_dims[1:]] == [28, 28, 1]
    (out,) = model.graph.output
    assert out.name == contract.OUTPUT_NAME
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out_dims = out.type.tensor_type.shape.dim
    assert out_dims[0].dim_param == in_dims[0].dim_param and out_dims[1].dim_value == 10
    (last,) = [n for n in model.graph.node if contract.OUTPUT_NAME in n.output]
    assert last.op_type == "Softmax"


def test_cnn_graph_is_conv_slices_max_and_gemms(exported_models):
    # The training-time custom gradient leaves no trace in the graph: one Conv on a baked OIHW
    # kernel, 2x2 pooling as 4 Slices and 3 Max, two Gemms, Softmax.
    model = onnx.load_model(exported_models / "cnn.onnx")
    ops = [n.op_type for n in model.graph.node]
    counts = {op: ops.count(op) for op in ("Conv", "Slice", "Max", "Gemm", "Softmax", "Transpose")}
    assert counts == {"Conv": 1, "Slice": 4, "Max": 3, "Gemm": 2, "Softmax": 1, "Transpose": 2}
    inits = {t.name: t for t in model.graph.initializer}
    (conv,) = [n for n in model.graph.node if n.op_type == "Conv"]
    assert list(inits[conv.input[1]].dims) == [32, 1, 3, 3]  # OIHW, no Transpose in front
    assert not any(n.op_type == "Transpose" and n.input[0] in inits for n in model.graph.node)


@pytest.mark.parametrize("file", FILES)
def test_metadata_names_model_training_source_and_contract(exported_models, trained_runs, file):
    name = file.split(".")[0]
    meta = {p.key: p.value for p in onnx.load_model(exported_models / file).metadata_props}
    run_metrics = json.loads((trained_runs[name] / "metrics.json").read_text())
    pointer = json.loads((trained_runs[name] / checkpoint.POINTER).read_text())

    assert meta[contract.META_MODEL] == name
    assert int(meta[contract.META_PARAMS]) == PARAMS[name]
    # Each file's own accuracy: the run's for the float file, the quantized graph's for int8.
    (entry,) = [e for e in manifest(exported_models, name)["files"] if e["file"] == file]
    assert float(meta[contract.META_TEST_ACCURACY]) == pytest.approx(
        entry["test_accuracy"], abs=5e-5
    )
    if ".int8." not in file:
        assert float(meta[contract.META_TEST_ACCURACY]) == pytest.approx(
            run_metrics["test_accuracy"]
        )
    config = json.loads(meta[contract.META_TRAIN_CONFIG])
    assert (config["model"], config["epochs"], config["batch_size"], config["seed"]) == (
        name,
        1,
        32,
        0,
    )
    assert meta[contract.META_PREPROCESSING] == contract.PREPROCESSING_SPEC
    assert meta[contract.META_RECIPE] == config["recipe"] == "original"  # as the fixtures train
    assert meta[contract.META_PRECISION] == config["precision"] == "float32"
    assert json.loads(meta[contract.META_LABELS]) == list(contract.LABELS)
    assert meta[contract.META_INPUT] == contract.INPUT_DESCRIPTION
    assert meta[contract.META_VERSION] and meta[contract.META_JAX2ONNX_VERSION]
    assert meta[contract.META_CHECKPOINT_STATE_SHA256] == pointer["state_sha256"]
    assert meta[contract.META_VARIANT] == ("int8" if ".int8." in file else "float32")


@pytest.mark.slow
def test_a_model_trained_in_bfloat16_exports_float32_files_that_name_its_precision(tmp_path, mnist):
    from flaxdigits.training.train import train

    config = TrainConfig(model="mlp", epochs=1, precision="bfloat16")
    train(config, tmp_path / "run", data=mnist, progress=False, log=lambda _: None)
    doc = export_run(tmp_path / "run", tmp_path / "models" / "mlp.onnx", int8=True)
    assert doc["training_precision"] == doc["train_config"]["precision"] == "bfloat16"
    assert doc["test_accuracy"] > 0.9  # parity with JAX held: export checks it
    for file in ("mlp.onnx", "mlp.int8.onnx"):
        model = onnx.load_model(tmp_path / "models" / file)
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta[contract.META_PRECISION] == "bfloat16"
        assert json.loads(meta[contract.META_TRAIN_CONFIG])["precision"] == "bfloat16"
        graph = model.graph
        for value in (*graph.input, *graph.output):  # the contract: float32 in, float32 out
            assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        kinds = {t.data_type for t in graph.initializer}
        assert onnx.TensorProto.BFLOAT16 not in kinds and onnx.TensorProto.FLOAT in kinds


@pytest.mark.parametrize("name", NAMES)
def test_manifest_lists_each_file_with_size_sha256_and_accuracy(exported_models, name):
    doc = manifest(exported_models, name)
    assert contract.manifest_path_for(str(exported_models / f"{name}.int8.onnx")).endswith(
        f"{name}.json"
    )
    assert doc["schema"] == contract.MANIFEST_SCHEMA and doc["model"] == name
    assert doc["opset"] == onnx_graph.OPSET and doc["params"] == PARAMS[name]
    assert doc["input"]["name"] == contract.INPUT_NAME and doc["input"]["shape"][1:] == [28, 28, 1]
    assert doc["output"]["name"] == contract.OUTPUT_NAME and doc["output"]["labels"] == list(
        contract.LABELS
    )
    assert doc["min_onnxruntime"] == onnx_export.MIN_ONNXRUNTIME
    assert [e["file"] for e in doc["files"]] == [f"{name}.onnx", f"{name}.int8.onnx"]
    for entry in doc["files"]:
        data = (exported_models / entry["file"]).read_bytes()
        assert entry["size"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert 0.9 < entry["test_accuracy"] <= 1.0
        assert entry["parity"]["images"] == 10_000
    float_entry = doc["files"][0]
    assert float_entry["test_accuracy"] == doc["test_accuracy"]
    assert float_entry["parity"]["max_abs_diff"] <= onnx_export.PARITY_TOLERANCE
    assert float_entry["parity"]["argmax_mismatches"] == 0


# -------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("batch_size", [1, 7, 128, 10_000])
@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_matches_jax_on_all_test_images(
    exported_models, jax_reference, test_images, mnist, name, batch_size
):
    sess = onnxrt.session(exported_models / f"{name}.onnx")
    probs = onnx_export.onnxruntime_probabilities(sess, test_images, batch_size)
    reference = jax_reference[name]["probabilities"]
    assert probs.shape == (10_000, 10) and probs.dtype == np.float32
    assert np.max(np.abs(probs - reference)) <= onnx_export.PARITY_TOLERANCE
    np.testing.assert_array_equal(probs.argmax(-1), reference.argmax(-1))
    accuracy = float(np.mean(probs.argmax(-1) == mnist.test_labels))
    assert accuracy == jax_reference[name]["accuracy"]


@pytest.mark.parametrize("name", NAMES)
def test_onnx_reference_evaluator_agrees_with_jax(
    exported_models, jax_reference, test_images, name
):
    evaluator = ReferenceEvaluator(onnx.load_model(exported_models / f"{name}.onnx"))
    (probs,) = evaluator.run(None, {contract.INPUT_NAME: test_images[:300]})
    reference = jax_reference[name]["probabilities"][:300]
    assert np.max(np.abs(probs - reference)) <= onnx_export.PARITY_TOLERANCE
    np.testing.assert_array_equal(probs.argmax(-1), reference.argmax(-1))


@pytest.mark.parametrize("name", NAMES)
def test_int8_is_static_qdq_small_and_within_0_2_points(
    exported_models, jax_reference, test_images, mnist, name
):
    float_path, int8_path = exported_models / f"{name}.onnx", exported_models / f"{name}.int8.onnx"
    ops = {n.op_type for n in onnx.load_model(int8_path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert not ops & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
    assert int8_path.stat().st_size <= 0.30 * float_path.stat().st_size

    probs = onnx_export.onnxruntime_probabilities(int8_path, test_images, 256)
    accuracy = float(np.mean(probs.argmax(-1) == mnist.test_labels))
    assert accuracy >= jax_reference[name]["accuracy"] - 0.002
    assert manifest(exported_models, name)["files"][1]["test_accuracy"] == accuracy
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------- determinism, writes


def test_exporting_twice_gives_byte_identical_files(exported_models, trained_runs, tmp_path):
    for name, run_dir in trained_runs.items():
        export_run(run_dir, tmp_path / f"{name}.onnx", int8=True)
    for file in (*FILES, "mlp.json", "cnn.json"):
        assert (tmp_path / file).read_bytes() == (exported_models / file).read_bytes(), file
    assert outputs_left(tmp_path) == sorted((*FILES, "mlp.json", "cnn.json"))


def test_float_only_export_drops_a_stale_int8_file(trained_runs, tmp_path):
    stale = tmp_path / "mlp.int8.onnx"
    stale.write_bytes(b"old")
    doc = export_run(trained_runs["mlp"], tmp_path / "mlp.onnx", int8=False)
    assert [e["file"] for e in doc["files"]] == ["mlp.onnx"]
    assert outputs_left(tmp_path) == ["mlp.json", "mlp.onnx"]
    assert (tmp_path / "mlp.onnx").stat().st_mode & 0o777 == 0o644


def test_failed_export_leaves_previous_files_untouched(trained_runs, tmp_path, monkeypatch):
    out = tmp_path / "mlp.onnx"
    out.write_bytes(b"previous model")

    def broken(*args, **kwargs):
        raise ExportError("quantizer failed")

    monkeypatch.setattr(onnx_export, "quantize_int8", broken)
    with pytest.raises(ExportError, match="quantizer failed"):
        export_run(trained_runs["mlp"], out, int8=True)
    assert out.read_bytes() == b"previous model"
    assert outputs_left(tmp_path) == ["mlp.onnx"]


# ---------------------------------------------------------------------------------- errors


def copy_run(run_dir, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(run_dir, dest)
    return dest


def save_checkpoint(run_dir, model: str, config_model: str):
    """A complete, hashed checkpoint of `model`'s state whose config names `config_model`."""
    _, state = init_state(TrainConfig(model=model, epochs=1))
    config = TrainConfig(model=model, epochs=1).to_dict() | {"model": config_model}
    checkpoint.save(run_dir, state, {"config": config}, epoch=1)
    return run_dir


def truncate_checkpoint(run_dir):
    step_dir = run_dir / json.loads((run_dir / checkpoint.POINTER).read_text())["dir"]
    path = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    path.write_bytes(path.read_bytes()[:1000])
    return run_dir


def foreign_checkpoint(run_dir):
    """A step whose pointer vouches for bytes that are not a flaxdigits checkpoint."""
    blob = b"\x82\xa6format\xa4evil\xa5state\xc0"
    (run_dir / "checkpoints" / "ckpt_0001" / "meta").mkdir(parents=True)
    (run_dir / "checkpoints" / "ckpt_0001" / "meta" / "metadata").write_bytes(blob)
    files = {"meta/metadata": {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}}
    pointer = {
        "format": checkpoint.FORMAT,
        "dir": "checkpoints/ckpt_0001",
        "files": files,
        "sha256": hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest(),
    }
    (run_dir / checkpoint.POINTER).write_text(json.dumps(pointer))
    return run_dir


BAD_RUNS = {
    "missing": (lambda run, tmp: tmp / "no-such-run", "has no checkpoint"),
    "empty": (lambda run, tmp: tmp, "has no checkpoint"),
    "half-written": (lambda run, tmp: truncate_checkpoint(copy_run(run, tmp)), "sha256"),
    "foreign": (lambda run, tmp: foreign_checkpoint(tmp), "not a flaxdigits checkpoint"),
    "other model's params": (lambda run, tmp: save_checkpoint(tmp, "mlp", "cnn"), "does not fit"),
    "unknown model": (lambda run, tmp: save_checkpoint(tmp, "mlp", "resnet"), "unknown model"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_checkpoint_is_a_one_line_error_and_writes_nothing(trained_runs, tmp_path, case):
    make, message = BAD_RUNS[case]
    (tmp_path / "runs").mkdir()
    run_dir = make(trained_runs["mlp"], tmp_path / "runs")
    out_dir = tmp_path / "models"
    with pytest.raises(CheckpointError, match=message) as info:
        export_run(run_dir, out_dir / "mlp.onnx", int8=True)
    assert "\n" not in str(info.value)
    assert not out_dir.exists()


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("models/mlp.txt", "must name NAME.onnx"),
        ("models/mlp.int8.onnx", "must name NAME.onnx"),
        ("blocker/mlp.onnx", "is not a directory"),
        ("blocker/sub/mlp.onnx", "is not a directory"),
        ("adir.onnx", "is a directory"),
    ],
)
def test_unusable_output_path_is_a_one_line_error_and_writes_nothing(
    trained_runs, tmp_path, out, message
):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    (tmp_path / "adir.onnx").mkdir()
    with pytest.raises(ExportError, match=message) as info:
        export_run(trained_runs["mlp"], tmp_path / out, int8=False)
    assert "\n" not in str(info.value)
    assert not list(tmp_path.rglob("*.onnx.*")) and not list(tmp_path.rglob("*.json"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.onnx", "blocker"]


def test_read_only_output_directory_is_refused_before_any_work(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root ignores the mode: make the write probe fail as it would
        import tempfile

        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(ExportError, match="cannot write in .*Permission denied"):
        export_run(tmp_path / "no-run-needed", models / "mlp.onnx")


def test_cli_export_reports_a_bad_run_in_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flaxdigits export: error:") and err.count("\n") == 1
    assert "flaxdigits train" in err
    assert outputs_left(tmp_path) == []


def test_benchmark_times_each_file_thread_count_and_batch(toy_model, capsys):
    from flaxdigits.export.latency import benchmark

    rows = benchmark([toy_model], batch_sizes=(1, 4), threads=(1, 2), blocks=2, block_seconds=0.01)
    assert [(r["file"], r["threads"], r["batch"]) for r in rows] == [
        ("toy.onnx", 1, 1),
        ("toy.onnx", 1, 4),
        ("toy.onnx", 2, 1),
        ("toy.onnx", 2, 4),
    ]
    for r in rows:
        assert 0 < r["ms_best"] <= r["ms"]
        assert r["images_per_s"] == pytest.approx(r["batch"] / r["ms"] * 1e3, rel=1e-2)
    # The CLI prints the same table: a header and one row per (threads, batch).
    assert main(["benchmark", str(toy_model), "--batch", "1", "--threads", "1"]) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].split() == ["file", "threads", "batch", "ms", "best", "ms", "img/s"]
    assert len(table) == 2 and table[1].split()[:3] == ["toy.onnx", "1", "1"]


@pytest.mark.parametrize("name", NAMES)
def test_each_file_carries_the_answer_rule_fitted_on_validation(
    exported_models, trained_runs, mnist, name
):
    from flaxdigits.evaluation import calibration

    entry = manifest(exported_models, name)
    rule = contract.check_answer_rule(entry["answer_rule"])
    for file in (f"{name}.onnx", f"{name}.int8.onnx"):
        props = {p.key: p.value for p in onnx.load_model(exported_models / file).metadata_props}
        assert json.loads(props[contract.META_ANSWER_RULE]) == rule
    # The same fit again from the run's validation split (never the test set) gives this rule.
    run = load_run(trained_runs[name])
    split = run.split(mnist)
    logits = run.logits(split.val_images)
    assert rule["temperature"] == pytest.approx(
        calibration.fit_temperature(logits, split.val_labels), rel=1e-4
    )
    confidence = calibration.softmax(logits, rule["temperature"]).max(-1)
    assert np.mean(confidence < rule["not_a_digit_below"]) == pytest.approx(
        contract.NOT_A_DIGIT_VALIDATION_SHARE, abs=0.001
    )
    answers = entry["files"][0]["answers"]
    assert 0 <= answers["ece"] <= 1 and 0 <= answers["not_a_digit"] <= 0.05
