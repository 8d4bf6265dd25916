"""The predictor's promises that tests/test_predictor.py leaves loose (serve/runtime/predictor.py):

the JSON a prediction becomes, inputs converted rather than passed through, the padding of a
fixed-batch model, the one output asked for by name, and every refusal's message: which file,
what is wrong, what was expected. The probe's rules (10 finite, non-negative probabilities
summing to 1) are checked with a session whose output the test chooses. Written against the
mutants `make mutation` showed surviving (docs/testing.md).
"""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from onnx import TensorProto, helper

from flaxdigits.core import contract
from flaxdigits.serve.runtime import predictor as predictor_module
from flaxdigits.serve.runtime.predictor import ModelLoadError, Prediction, Predictor
from tests.support.toy_onnx import toy_model, write_model

METADATA = {contract.META_LABELS: json.dumps(list(contract.LABELS))}


def _ink() -> np.ndarray:
    image = np.zeros((28, 28), np.float32)
    image[8:20, 12:15] = 1.0
    return image


def _refused(path, message: str):
    """pytest.raises for a ModelLoadError that reads exactly `path: message`."""
    return pytest.raises(ModelLoadError, match=f"^{re.escape(f'{path}: {message}')}$")


@pytest.fixture
def good(tmp_path):
    return Predictor(write_model(tmp_path, toy_model(metadata=METADATA)))


# ------------------------------------------------------------------------------- predictions


def test_a_prediction_becomes_json_with_six_decimals():
    probabilities = (0.1234564, 0.8765436) + (0.0,) * 8
    got = Prediction(digit=1, confidence=0.87654361, probabilities=probabilities).to_json()
    assert got == {
        "digit": 1,
        "confidence": 0.876544,
        "probabilities": [0.123456, 0.876544] + [0.0] * 8,
        "answer": "digit",  # a Prediction made without a rule: a digit
    }
    assert all(isinstance(p, float) for p in got["probabilities"])
    assert isinstance(got["confidence"], float)


RULE = {
    "temperature": 1.2,
    "not_a_digit_below": 0.5,
    "not_sure_below": 0.8,
    "validation_rejected": 0.005,
}


def test_a_files_answer_rule_is_read_and_applied(tmp_path):
    meta = METADATA | {contract.META_ANSWER_RULE: json.dumps(RULE)}
    p = Predictor(write_model(tmp_path, toy_model(metadata=meta)))
    assert p.answer_rule == RULE
    prediction = p.predict(_ink())
    assert prediction.answer == contract.answer(prediction.confidence, RULE)
    (tmp_path / "old").mkdir()
    old = Predictor(write_model(tmp_path / "old", toy_model(metadata=METADATA)))
    assert old.answer_rule is None and old.predict(_ink()).answer == "digit"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        json.dumps({**RULE, "not_a_digit_below": 0.9}),
        json.dumps({**RULE, "temperature": -1}),
        json.dumps([0.5, 0.8]),
        "[" * 100_000,
    ],
)
def test_a_bad_answer_rule_refuses_the_file(tmp_path, raw):
    path = write_model(tmp_path, toy_model(metadata=METADATA | {contract.META_ANSWER_RULE: raw}))
    with pytest.raises(ModelLoadError, match="a bad flaxdigits.answer_rule"):
        Predictor(path)


def test_repr_names_the_file_and_the_model(good):
    assert repr(good) == f"Predictor({str(good.path)!r}, name='mlp')"


def test_any_numeric_dtype_is_converted_to_float32(good):
    ink = _ink()
    want = good.predict_batch(ink[None])
    for images in (ink[None].astype(np.float64), ink[None].astype(np.uint8), ink[None] > 0.5):
        np.testing.assert_allclose(good.predict_batch(images), want, atol=1e-6)
    assert good.predict(ink.astype(np.float64)).digit == 3


def test_non_numeric_images_are_refused_by_dtype(good):
    for images, dtype in [
        (np.full((1, 28, 28), "a"), "<U1"),
        (np.zeros((1, 28, 28), np.complex64), "complex64"),
    ]:
        message = f"expected a numeric image array, got dtype {dtype}"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            good.predict_batch(images)


def test_out_of_range_values_are_refused_with_the_way_out(good):
    message = "image values must be finite and in [0, 1] (use preprocess())"
    for value in (1.5, 1.0001, -1e-6, np.inf):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            good.predict_batch(np.full((1, 28, 28), value, np.float32))
    assert good.predict_batch(np.ones((1, 28, 28), np.float32)).shape == (1, 10)


def test_a_wrong_shape_is_named_as_given(good):
    message = "expected images of shape (N, 28, 28) or (N, 28, 28, 1), got (2, 28, 27)"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        good.predict_batch(np.zeros((2, 28, 27), np.float32))


def test_an_empty_batch_is_float32_like_any_other(good):
    empty = good.predict_batch(np.zeros((0, 28, 28), np.float32))
    assert empty.shape == (0, 10) and empty.dtype == np.float32


def test_a_fixed_batch_is_padded_for_the_last_chunk_and_rows_stay_in_order(tmp_path):
    path = write_model(tmp_path, toy_model(metadata=METADATA, input_shape=(4, 28, 28, 1)))
    predictor = Predictor(path)
    blank = np.zeros((28, 28), np.float32)
    images = np.stack([blank, _ink(), _ink(), blank, _ink(), blank])  # chunks of 4 and 2 (+2)
    probs = predictor.predict_batch(images)
    assert probs.shape == (6, 10) and probs.argmax(axis=1).tolist() == [0, 3, 3, 0, 3, 0]
    assert predictor.predict(_ink()).digit == 3  # 1 image padded to 4


def test_only_the_probabilities_output_is_asked_for(tmp_path):
    model = toy_model(metadata=METADATA)
    # The logits listed first as a second graph output: a valid model with more than we use.
    model.graph.output.insert(0, helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 10]))
    predictor = Predictor(write_model(tmp_path, model))
    assert predictor.predict(_ink()).digit == 3


# --------------------------------------------------------------------------------- refusals


def test_an_input_of_another_name_is_named(tmp_path):
    path = write_model(tmp_path, toy_model(input_name="x"))
    with _refused(path, "not a flaxdigits model: inputs ['x'], expected ['image']"):
        Predictor(path)


def test_an_input_of_doubles_is_refused_even_with_the_right_shape(tmp_path):
    model = toy_model(input_name="as_float")
    model.graph.node.insert(
        0, helper.make_node("Cast", ["image"], ["as_float"], to=TensorProto.FLOAT)
    )
    del model.graph.input[:]
    model.graph.input.append(
        helper.make_tensor_value_info("image", TensorProto.DOUBLE, ["N", 28, 28, 1])
    )
    path = write_model(tmp_path, model)
    message = (
        "not a flaxdigits model: input 'image' is tensor(double) ['N', 28, 28, 1], "
        "expected tensor(float) [N, 28, 28, 1]"
    )
    with _refused(path, message):
        Predictor(path)


@pytest.mark.parametrize("shape", [("N", 28, 28), ("N", 1, 28, 28)])
def test_an_input_of_another_shape_says_what_is_expected(tmp_path, shape):
    path = write_model(tmp_path, toy_model(input_shape=shape))
    message = (
        f"not a flaxdigits model: input 'image' is tensor(float) {list(shape)}, "
        "expected tensor(float) [N, 28, 28, 1]"
    )
    with _refused(path, message):
        Predictor(path)


def test_an_output_of_another_width_says_what_is_expected(tmp_path):
    path = write_model(tmp_path, toy_model(classes=9))
    message = (
        "not a flaxdigits model: output 'probabilities' is tensor(float) ['N', 9], "
        "expected tensor(float) [N, 10]"
    )
    with _refused(path, message):
        Predictor(path)


def test_an_unknown_preprocessing_lists_the_known_ones(tmp_path):
    path = write_model(tmp_path, toy_model(metadata={contract.META_PREPROCESSING: "other-v9"}))
    known = ", ".join(sorted(contract.KNOWN_PREPROCESSING_SPECS))
    message = (
        f"expects preprocessing 'other-v9', but this version of flaxdigits implements only "
        f"{known}: upgrade flaxdigits or re-export the model"
    )
    with _refused(path, message):
        Predictor(path)


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        ('"' + "x" * 78 + '"', '"' + "x" * 78 + '"'),  # 80 characters: shown whole
        ('"' + "x" * 79 + '"', '"' + "x" * 79 + "…"),  # 81: the first 80 and an ellipsis
        ("[0, 1, 2", "[0, 1, 2"),  # not JSON
    ],
)
def test_wrong_labels_are_quoted_up_to_80_characters(tmp_path, labels, shown):
    path = write_model(tmp_path, toy_model(metadata={contract.META_LABELS: labels}))
    message = f"labels {shown!r}, expected {json.dumps(list(contract.LABELS))}"
    with _refused(path, message):
        Predictor(path)


def test_a_model_the_checker_refuses_names_the_first_line_of_why(tmp_path):
    model = toy_model()
    model.graph.node[1].input[0] = "nowhere"  # Gemm reads a tensor nothing makes
    path = write_model(tmp_path, model)
    with pytest.raises(ModelLoadError) as caught:
        Predictor(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a valid ONNX model: ") and "nowhere" in message
    assert "\n" not in message


class _ChosenOutput:
    """A real session whose run() returns `probs` (or raises it, if an exception)."""

    def __init__(self, inner, probs):
        self._inner, self._probs = inner, probs

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def run(self, names, feeds):
        if isinstance(self._probs, Exception):
            raise self._probs
        return [np.asarray(self._probs, np.float32)]


def _load_with_output(monkeypatch, tmp_path, probs):
    real = predictor_module._session
    monkeypatch.setattr(
        predictor_module, "_session", lambda *args: _ChosenOutput(real(*args), probs)
    )
    return Predictor(write_model(tmp_path, toy_model(metadata=METADATA)))


@pytest.mark.parametrize(
    "probs",
    [
        [[np.nan] + [0.0] * 9],
        [[-0.5, 1.5] + [0.0] * 8],  # sums to 1, one negative
        [[0.1] * 11],  # 11 classes behind a symbolic output width
        [[0.09] * 10],  # sums to 0.9
    ],
)
def test_the_probe_refuses_anything_but_one_probability_vector(monkeypatch, tmp_path, probs):
    with pytest.raises(ModelLoadError, match="is not a probability vector"):
        _load_with_output(monkeypatch, tmp_path, probs)


def test_the_probe_message_gives_shape_and_sum(monkeypatch, tmp_path):
    path = tmp_path / "mlp.onnx"
    message = "output 'probabilities' is not a probability vector (got shape (1, 10), sum 0.9)"
    with _refused(path, message):
        _load_with_output(monkeypatch, tmp_path, [[0.09] * 10])


@pytest.mark.parametrize("probs", [[[1.0] + [0.0] * 9], [[0.104] * 10], [[0.096] * 10]])
def test_the_probe_accepts_exact_zeros_and_a_coarse_int8_sum(monkeypatch, tmp_path, probs):
    assert _load_with_output(monkeypatch, tmp_path, probs).name == "mlp"


def test_a_model_onnxruntime_cannot_run_says_why(monkeypatch, tmp_path):
    path = tmp_path / "mlp.onnx"
    with _refused(path, "onnxruntime cannot run the model: out of memory"):
        _load_with_output(monkeypatch, tmp_path, RuntimeError("out of memory"))


def test_first_line_of_an_error_or_its_type():
    assert predictor_module._first_line(ValueError("  first\nsecond\n")) == "first"
    assert predictor_module._first_line(KeyError()) == "KeyError"
    assert predictor_module._first_line(OSError(" \n ")) == "OSError"


# ------------------------------------------------------------------------- loading, manifest


def test_threads_default_to_one_and_are_passed_to_onnxruntime(tmp_path):
    path = write_model(tmp_path, toy_model(metadata=METADATA))
    assert Predictor(path)._session.get_session_options().intra_op_num_threads == 1
    assert Predictor(path, threads=3)._session.get_session_options().intra_op_num_threads == 3
    assert Predictor(path, threads=0).name == "mlp"  # 0: onnxruntime's default


@pytest.mark.parametrize("threads", [True, False, -1, 1.0, "2", None])
def test_threads_must_be_a_non_negative_int(tmp_path, threads):
    path = write_model(tmp_path, toy_model(metadata=METADATA))
    message = f"threads must be a non-negative integer, got {threads!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Predictor(path, threads=threads)


def test_the_name_falls_back_to_the_file_stem(tmp_path):
    unnamed = toy_model(metadata={contract.META_MODEL: None})
    path = tmp_path / "cnn.int8.onnx"
    path.write_bytes(unnamed.SerializeToString())
    assert Predictor(path, manifest=None).name == "cnn"
    named = tmp_path / "model.onnx"
    named.write_bytes(toy_model(name="cnn").SerializeToString())
    assert Predictor(named, manifest=None).name == "cnn"


def _external(tmp_path, locations: list[str | None]):
    """The toy model plus one initializer per location, stored as external data there (None:
    marked external with no location entry)."""
    from onnx import numpy_helper
    from onnx.external_data_helper import set_external_data

    model = toy_model()
    for i, location in enumerate(locations):
        tensor = numpy_helper.from_array(np.zeros(4, np.float32), f"extra{i}")
        set_external_data(tensor, location=location or "x", offset=0, length=16)
        tensor.ClearField("raw_data")
        if location is None:
            del tensor.external_data[:]
        model.graph.initializer.append(tensor)
    return write_model(tmp_path, model, manifest=False)


@pytest.mark.parametrize(
    ("locations", "names"),
    [
        (["w.bin"], "w.bin"),
        (["d.bin", "b.bin", "a.bin", "c.bin"], "a.bin, b.bin, c.bin"),
        ([None], "data_location=EXTERNAL"),
    ],
)
def test_external_data_is_refused_naming_up_to_three_files(tmp_path, locations, names):
    path = _external(tmp_path, locations)
    message = f"refers to external data ({names}): only self-contained models are loaded"
    with _refused(path, message):
        Predictor(path)


def test_a_file_that_is_not_protobuf_is_named(tmp_path):
    path = tmp_path / "mlp.onnx"
    path.write_bytes(b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")
    with pytest.raises(ModelLoadError, match=f"^{re.escape(str(path))}: not a valid ONNX file \\("):
        Predictor(path)


def test_a_model_onnxruntime_cannot_load_gives_the_first_line(monkeypatch, tmp_path):
    path = write_model(tmp_path, toy_model(metadata=METADATA))

    def refuse(data, threads):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : bad graph\nat node 3")

    monkeypatch.setattr(predictor_module.onnxrt, "session", refuse)
    message = "onnxruntime cannot load the model: [ONNXRuntimeError] : 1 : FAIL : bad graph"
    with _refused(path, message):
        Predictor(path)


def test_a_manifest_mismatch_quotes_both_sides(tmp_path):
    path = write_model(tmp_path, toy_model(metadata=METADATA), sha256="ab" * 32, size=5)
    data = path.read_bytes()

    sha = hashlib.sha256(data).hexdigest()
    message = (
        f"sha256 {sha[:16]}… ({len(data)} bytes) does not match its manifest mlp.json "
        f"({'ab' * 8}…, 5 bytes): the file was modified or truncated; re-export or restore it"
    )
    with _refused(path, message):
        Predictor(path)


@pytest.mark.parametrize("files", [None, {"file": "mlp.onnx"}, "mlp.onnx", 3])
def test_a_manifest_whose_files_is_not_a_list_lists_nothing(tmp_path, files):
    path = write_model(tmp_path, toy_model(metadata=METADATA))
    doc = {"schema": contract.MANIFEST_SCHEMA, "files": files}
    (tmp_path / "mlp.json").write_text(json.dumps(doc))
    with _refused(tmp_path / "mlp.json", "does not list mlp.onnx; re-export the model"):
        Predictor(path)
