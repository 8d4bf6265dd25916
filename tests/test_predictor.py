"""Predictor: refuses anything but a sound flaxdigits model; predicts with hand-built ONNX graphs.

The graphs here are made with onnx.helper, so these tests need no trained model; one test at the
end runs the real 1-epoch exports on canvases of real MNIST test digits.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data, set_external_data

from flaxdigits.serve import spec
from flaxdigits.serve.predictor import ModelLoadError, Prediction, Predictor, model_files

METADATA = {
    spec.META_MODEL: "mlp",
    spec.META_PREPROCESSING: spec.PREPROCESSING_SPEC,
    spec.META_LABELS: json.dumps(list(spec.LABELS)),
    spec.META_VARIANT: "float32",
}


def linear_model(
    *,
    input_name=spec.INPUT_NAME,
    input_shape=("N", 28, 28, 1),
    output_name=spec.OUTPUT_NAME,
    classes=10,
    softmax=True,
    metadata=None,
) -> onnx.ModelProto:
    """Flatten -> MatMul -> Add -> Softmax. Blank images predict 0; any ink predicts 3."""
    weights = np.zeros((784, classes), np.float32)
    weights[:, 3 % classes] = 1.0  # logit 3 = total ink
    bias = np.zeros(classes, np.float32)
    bias[0] = 2.0
    inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))
    out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", classes])
    nodes = [
        helper.make_node("Flatten", [input_name], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["z" if softmax else output_name]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], [output_name], axis=-1))
    graph = helper.make_graph(
        nodes,
        "linear",
        [inp],
        [out],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, value in (METADATA if metadata is None else metadata).items():
        model.metadata_props.add(key=key, value=value)
    return model


def write_model(directory, model, name="mlp", manifest=True, **manifest_changes):
    """NAME.onnx (+ NAME.json manifest unless manifest=False); returns the model path."""
    path = directory / f"{name}.onnx"
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    path.write_bytes(data)
    if manifest:
        entry = {
            "file": path.name,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "test_accuracy": 0.5,
            "variant": "float32",
        }
        entry.update(manifest_changes)
        doc = {"schema": spec.MANIFEST_SCHEMA, "model": name, "files": [entry], "opset": 17}
        (directory / f"{name}.json").write_text(json.dumps(doc))
    return path


@pytest.fixture
def good(tmp_path):
    return write_model(tmp_path, linear_model())


def ink_image() -> np.ndarray:
    image = np.zeros((28, 28), np.float32)
    image[8:20, 12:15] = 1.0
    return image


# -------------------------------------------------------------------------------- prediction


def test_valid_model_loads_with_its_manifest_and_predicts(good):
    predictor = Predictor(good)
    assert predictor.name == "mlp"
    assert predictor.metadata[spec.META_PREPROCESSING] == spec.PREPROCESSING_SPEC
    assert predictor.manifest_entry["file"] == "mlp.onnx"
    blank = predictor.predict(np.zeros((28, 28), np.float32))
    assert isinstance(blank, Prediction) and blank.digit == 0
    inked = predictor.predict(ink_image()[..., None])
    assert inked.digit == 3 and inked.confidence > 0.99
    assert len(inked.probabilities) == 10 and all(isinstance(p, float) for p in inked.probabilities)
    assert inked.confidence == max(inked.probabilities)
    assert abs(sum(inked.probabilities) - 1) < 1e-5


def test_predict_batch_matches_single_predictions_across_chunks(good):
    predictor = Predictor(good, threads=2)
    rng = np.random.default_rng(0)
    images = (rng.random((1100, 28, 28)) < 0.01).astype(np.float32)  # > one 512-image chunk
    images[::3] = 0
    probs = predictor.predict_batch(images)
    assert probs.shape == (1100, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, predictor.predict_batch(images[..., None]))
    for i in (0, 1, 511, 512, 1099):
        np.testing.assert_allclose(probs[i], predictor.predict(images[i]).probabilities, atol=1e-6)
    assert predictor.predict_batch(np.zeros((0, 28, 28), np.float32)).shape == (0, 10)


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((2, 28, 27), np.float32),
        np.zeros((2, 28, 28, 3), np.float32),
        np.full((1, 28, 28), np.nan, np.float32),
        np.full((1, 28, 28), 255.0, np.float32),
        np.full((1, 28, 28), -0.1, np.float32),
    ],
)
def test_predict_batch_refuses_unpreprocessed_input(good, images):
    with pytest.raises(ValueError, match="expected images|finite and in"):
        Predictor(good).predict_batch(images)


def test_predict_refuses_a_batch(good):
    with pytest.raises(ValueError, match=r"\(28, 28\)"):
        Predictor(good).predict(np.zeros((1, 28, 28), np.float32))


def test_fixed_batch_model_is_padded_and_chunked(tmp_path):
    path = write_model(tmp_path, linear_model(input_shape=(1, 28, 28, 1)))
    images = np.stack([np.zeros((28, 28), np.float32), ink_image(), ink_image()])
    assert Predictor(path).predict_batch(images).argmax(axis=1).tolist() == [0, 3, 3]


def test_bad_thread_count_is_refused(good):
    with pytest.raises(ValueError, match="threads"):
        Predictor(good, threads=-1)


def test_model_files_lists_float_before_int8(tmp_path):
    for name in ("mlp.int8.onnx", "cnn.onnx", "mlp.onnx", "cnn.int8.onnx", "notes.txt"):
        (tmp_path / name).touch()
    names = [p.name for p in model_files(tmp_path)]
    assert names == ["cnn.onnx", "cnn.int8.onnx", "mlp.onnx", "mlp.int8.onnx"]


# ---------------------------------------------------------------------------------- manifest


def test_tampered_model_is_refused_by_its_manifest_sha256(tmp_path):
    path = write_model(tmp_path, linear_model())
    tampered = linear_model()
    tampered.graph.initializer[1].raw_data = np.full(10, 5.0, np.float32).tobytes()
    path.write_bytes(tampered.SerializeToString())  # same size, valid model, other weights
    with pytest.raises(ModelLoadError, match="does not match its manifest"):
        Predictor(path)
    assert Predictor(path, manifest=None).name == "mlp"  # the file itself is a valid model


def test_manifest_policy(tmp_path):
    lone = write_model(tmp_path, linear_model(), manifest=False)
    assert Predictor(lone).manifest_entry is None  # "auto": no manifest, structural checks only
    with pytest.raises(ModelLoadError, match="no such manifest"):
        Predictor(lone, manifest=tmp_path / "missing.json")
    int8 = tmp_path / "mlp.int8.onnx"
    int8.write_bytes(lone.read_bytes())
    write_model(tmp_path, linear_model())  # mlp.json lists only mlp.onnx
    with pytest.raises(ModelLoadError, match="does not list mlp.int8.onnx"):
        Predictor(int8)
    (tmp_path / "mlp.json").write_text('{"schema": "other.v9", "files": []}')
    with pytest.raises(ModelLoadError, match="not a flaxdigits.manifest.v1 manifest"):
        Predictor(lone)
    (tmp_path / "mlp.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not a JSON manifest"):
        Predictor(lone)


def test_manifest_with_a_wrong_size_is_refused(tmp_path):
    path = write_model(tmp_path, linear_model(), size=1)
    with pytest.raises(ModelLoadError, match="does not match"):
        Predictor(path)


# ------------------------------------------------------------------------------ foreign files


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_name": "input"}, r"inputs \['input'\]"),
        ({"input_shape": ("N", 784)}, r"expected tensor\(float\) \[N, 28, 28, 1\]"),
        ({"input_shape": ("N", 1, 28, 28)}, r"\[N, 28, 28, 1\]"),
        ({"output_name": "logits"}, r"outputs \['logits'\]"),
        ({"classes": 5}, r"expected tensor\(float\) \[N, 10\]"),
        ({"softmax": False}, "not a probability vector"),
    ],
)
def test_foreign_models_with_other_io_are_refused(tmp_path, kwargs, match):
    with pytest.raises(ModelLoadError, match=match):
        Predictor(write_model(tmp_path, linear_model(**kwargs)))


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({**METADATA, spec.META_PREPROCESSING: "flaxdigits.mnist28.v2"}, "expects preprocessing"),
        ({k: v for k, v in METADATA.items() if k != spec.META_PREPROCESSING}, "not a flaxdigits"),
        ({**METADATA, spec.META_LABELS: json.dumps(list("9876543210"))}, "labels"),
    ],
    ids=["unknown spec", "no spec", "other labels"],
)
def test_models_with_unknown_preprocessing_or_labels_are_refused(tmp_path, metadata, match):
    with pytest.raises(ModelLoadError, match=match):
        Predictor(write_model(tmp_path, linear_model(metadata=metadata)))


def test_too_large_truncated_and_garbage_files_are_refused(tmp_path, good):
    with pytest.raises(ModelLoadError, match="over the 1,000-byte limit"):
        Predictor(good, max_bytes=1000)
    data = good.read_bytes()
    cut = write_model(tmp_path, data[: len(data) // 2], name="cut", manifest=False)
    with pytest.raises(ModelLoadError, match="not a valid ONNX"):
        Predictor(cut)
    text = write_model(tmp_path, b"this is not a model\n" * 10, name="text", manifest=False)
    with pytest.raises(ModelLoadError, match="not a valid ONNX"):
        Predictor(text)
    empty = write_model(tmp_path, b"", name="empty", manifest=False)
    with pytest.raises(ModelLoadError, match="empty file"):
        Predictor(empty)
    with pytest.raises(ModelLoadError, match="no such model"):
        Predictor(tmp_path / "absent.onnx")


def external_model(tmp_path) -> onnx.ModelProto:
    """Our linear model with its weights moved to weights.bin beside it (loadable by ORT)."""
    model = linear_model()
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    onnx.save_model(model, tmp_path / "scratch.onnx")  # writes weights.bin
    return model


@pytest.mark.parametrize("hide_onnx", [False, True], ids=["with onnx", "without onnx"])
def test_external_data_is_refused(tmp_path, monkeypatch, hide_onnx):
    model = external_model(tmp_path)
    path = write_model(tmp_path, model)
    monkeypatch.chdir(tmp_path)  # onnxruntime would resolve weights.bin against the cwd
    if hide_onnx:
        monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` raises ImportError
    with pytest.raises(ModelLoadError, match=r"external data \(weights.bin\)"):
        Predictor(path)


def test_external_data_in_a_nested_subgraph_is_found(tmp_path, monkeypatch):
    tensor = numpy_helper.from_array(np.ones(10, np.float32), "hidden")
    set_external_data(tensor, location="../../etc/passwd")
    tensor.ClearField("raw_data")
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=tensor)],
        "branch",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [10])],
    )
    model = linear_model()
    model.graph.node.append(
        helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch)
    )
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ModelLoadError, match="etc/passwd"):
        Predictor(write_model(tmp_path, model))


# ------------------------------------------------------------------------------- real models


def test_exported_models_read_canvas_drawn_mnist_digits(exported_models, mnist):
    from flaxdigits.serve.canvas_eval import render_canvas
    from flaxdigits.serve.preprocess import preprocess

    indices = range(60)
    images = np.stack(
        [
            preprocess(render_canvas(mnist.test_images[i], np.random.default_rng([7, i]))).image
            for i in indices
        ]
    )
    labels = mnist.test_labels[list(indices)]
    for path in model_files(exported_models):
        predictor = Predictor(path)  # the manifest beside it is found and checked
        assert predictor.manifest_entry is not None
        assert predictor.name in ("mlp", "cnn")
        accuracy = float(np.mean(predictor.predict_batch(images).argmax(axis=1) == labels))
        assert accuracy >= 0.85, f"{path.name}: {accuracy:.2%} on 60 canvases"
