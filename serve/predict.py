"""`flaxdigits predict`: digits in image files, one line per file, numpy/Pillow/onnxruntime only."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from PIL import Image

from flaxdigits.core import contract
from flaxdigits.release import reader as release
from flaxdigits.serve import inputs
from flaxdigits.serve.runtime.decode import ImageInputError, load_image_file
from flaxdigits.serve.runtime.model_set import Drawing, load_models
from flaxdigits.serve.runtime.predictor import ModelLoadError, Prediction, Predictor
from flaxdigits.serve.runtime.preprocess import preprocess

EXIT_OK, EXIT_FILE_FAILED, EXIT_BAD_MODEL = 0, 1, 2


def predict_files(
    model_path,
    files,
    *,
    method=contract.DEFAULT_PREPROCESS_METHOD,
    as_json=False,
    threads=1,
    release_file=None,
    stdin=None,
) -> int:
    """Predict the digit in each image file and print one line per file.

    Args:
        model_path: an exported .onnx model (its manifest beside it is checked if present), or a
            release archive or folder (every checksum verified first; see release_file).
        files: image files, folders (image files under them, recursively), glob patterns, or
            "-" for paths on stdin (serve/inputs.py).
        method: preprocessing method, "mnist" or "box" ("seed": box's old name).
        as_json: print JSON lines {"file", "digit", "confidence", "probabilities", "answer"} or
            {"file", "error"} on stdout, instead of readable lines (errors then on stderr).
        threads: onnxruntime intra-op threads.
        release_file: which model of a release, e.g. cnn.onnx or mlp.int8.onnx (None: cnn.onnx,
            or cnn.int8.onnx in a release of the int8 files only).
        stdin: where "-" reads paths from (default sys.stdin).

    Returns:
        The exit status: 0 all predicted, 1 some file failed, 2 the model or options are unusable.
    """
    try:
        method = contract.check_method(method)
    except ValueError:
        print(f"flaxdigits predict: error: unknown --preprocess {method!r}", file=sys.stderr)
        return EXIT_BAD_MODEL
    try:  # a release is verified, loaded from a private copy, and the copy removed
        with release.model_file(model_path, release_file) as path:
            predictor = _load(path, threads)
    except (ModelLoadError, ValueError, OSError) as e:  # ReleaseError is a ValueError
        print(f"flaxdigits predict: error: {e}", file=sys.stderr)
        return EXIT_BAD_MODEL
    status = EXIT_OK
    with warnings.catch_warnings():  # process-wide while it runs (the CLI has one thread)
        # Pillow warns on stderr about corrupt EXIF, odd chunks or large images: each file's
        # problem is already its own line. A decompression-bomb warning becomes that file's error.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for file in inputs.expand(files, stdin):
            if isinstance(file, inputs.InputProblem):
                status = EXIT_FILE_FAILED
                _print_error(file.path, file.message, as_json)
                continue
            try:
                image = preprocess(load_image_file(file), method).image
            except ImageInputError as e:
                status = EXIT_FILE_FAILED
                _print_error(str(file), str(e), as_json)
                continue
            _print_prediction(str(file), *predictor(image), as_json)
    return status


def _load(path, threads: int):
    """image -> (Prediction, Drawing or None) of the model file at path: under the drawing rule
    where the gate of its variant lies beside it (model_set), else by its own answer rule."""
    path = Path(path)
    stem, variant = path.name.split(".")[0], contract.variant_of(path.name)
    gate = path.with_name(contract.model_file(contract.GATE_NAME, variant))
    if (
        path.name == contract.model_file(stem, variant)
        and stem in contract.MODEL_NAMES
        and gate.is_file()
    ):
        models = load_models(path.parent, threads=threads, variant=variant)  # path among them

        def predict(image):
            predictions, drawing = models.predict(image)
            return predictions[stem], drawing

        return predict
    predictor = Predictor(path, threads=threads)
    return lambda image: (predictor.predict(image), None)


def _print_prediction(file: str, prediction: Prediction, drawing: Drawing | None, as_json: bool):
    if as_json:
        extra = {} if drawing is None else {"drawing": drawing.to_json()}
        print(json.dumps({"file": file, **prediction.to_json(), **extra}), flush=True)
    else:
        shown = _printable(file)
        print(f"{shown}: {_said(prediction)} (confidence {prediction.confidence:.3f})", flush=True)


def _said(prediction: Prediction) -> str:
    """The answer in words: the digit, "not sure, maybe 4" or "not a digit"."""
    if prediction.answer == "not a digit":
        return "not a digit"
    if prediction.answer == "not sure":
        return f"not sure, maybe {prediction.digit}"
    return str(prediction.digit)


def _print_error(file: str, message: str, as_json: bool) -> None:
    # Errors from load_image_file already start with the file name; keep one copy of it.
    message = message.removeprefix(f"{file}: ")
    if as_json:
        print(json.dumps({"file": file, "error": message}), flush=True)
    else:
        print(f"{_printable(file)}: error: {_printable(message)}", file=sys.stderr, flush=True)


def _printable(text: str) -> str:
    """One printable line on any terminal: undecodable bytes and control characters escaped."""
    # A file name from bytes that are not UTF-8 (b"\xff.png") arrives as "\udcff.png": printed
    # as is, a strict-UTF-8 stdout raises and the run stops; a newline would split the line.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
