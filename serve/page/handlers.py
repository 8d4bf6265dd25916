"""What the page does with an input: plain functions of the predictors and a value, each
releasing the uploads it read (TempFiles), unit-testable without a server. The page's views
(serve/page/views.py) say what is shown; serve/page/layout.py wires these to components.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import gradio as gr

from flaxdigits.core import contract
from flaxdigits.serve.page.temp_files import UPLOAD_KEEP_S, TempFiles
from flaxdigits.serve.page.views import (
    UPLOAD_PROMPT,
    blank_canvas,
    model_subtitle,
    page_outputs,
    predict_all,
    render_result,
    render_steps,
)
from flaxdigits.serve.runtime.decode import (
    ImageInputError,
)
from flaxdigits.serve.runtime.model_set import ModelSet, as_model_set, load_models
from flaxdigits.serve.runtime.predictor import Predictor

UPLOAD_GONE = (
    f"This upload is no longer on the server (kept {UPLOAD_KEEP_S / 60:g} minutes after it was "
    "last read): upload the image again."
)


def load_predictors(models_dir, *, threads: int = 1) -> ModelSet:
    """model_set.load_models: MODELS_DIR's mlp and cnn (float, else int8 in a folder of int8
    files only), and the gate with them when it is there."""
    return load_models(models_dir, threads=threads)


class Handlers:
    """The page's event handlers and the /predict endpoint: plain functions of their inputs
    (tests call them directly). Each releases the uploads it read (temp_files)."""

    def __init__(self, predictors: Mapping[str, Predictor], temp_files: TempFiles | None = None):
        self.predictors = as_model_set(predictors)  # with a gate, it decides "not a digit"
        self.subtitles = {name: model_subtitle(p) for name, p in self.predictors.items()}
        self.temp_files = temp_files

    def outputs_for(self, source: str, value, method: str) -> list:
        """[source, status, *cards, steps] for a drawing or an uploaded file."""
        try:
            if source == "upload" and isinstance(value, str) and not os.path.exists(value):
                status = UPLOAD_GONE
                cards = [render_result(n, None, self.subtitles[n]) for n in self.predictors]
                return [source, status, *cards, render_steps([])]
            empty = UPLOAD_PROMPT if source == "upload" else None
            status, cards, steps = page_outputs(
                value, method, self.predictors, empty_message=empty, subtitles=self.subtitles
            )
            return [source, status, *cards, render_steps(steps)]
        finally:  # the Upload tab reads its file again on a method switch: kept for that
            self.release(value, UPLOAD_KEEP_S if source == "upload" else None)

    def on_draw(self, value, method):
        return self.outputs_for("draw", value, method)

    def on_stroke(self, source, value, method):
        if source == "upload":  # queued before the person switched to Upload: stale, drop it
            self.release(value)
            return [gr.skip()] * (3 + len(self.predictors))
        return self.outputs_for("draw", value, method)

    def on_upload(self, path, method):
        return self.outputs_for("upload", path, method)

    def on_method(self, source, drawing, path, method):
        if source == "upload":
            self.release(drawing)
            return self.outputs_for(source, path, method)
        self.release(path, UPLOAD_KEEP_S)
        return self.outputs_for(source, drawing, method)

    def on_clear(self, method):
        return [blank_canvas(), *self.outputs_for("draw", None, method)]

    def predict(self, image: str | None, method: str) -> dict:
        """Classify an image file with both models (JSON: digit, confidence, probabilities)."""
        if image is None:
            raise gr.Error("No image: pass an image file.", print_exception=False)
        try:
            method = _method(method)
            return predict_all(image, method, self.predictors)
        except ImageInputError as e:
            reason = str(e).removeprefix(f"{image}: ")
            raise gr.Error(reason, print_exception=False) from None
        finally:  # read: the upload is deleted once no request holds it
            self.release(image)

    def release(self, value, keep_s: float | None = None) -> None:
        """Release the uploaded files a value names: a path, or an editor value's paths."""
        if self.temp_files is None:
            return
        if isinstance(value, dict):
            paths = [value.get("background"), *(value.get("layers") or []), value.get("composite")]
        else:
            paths = [value]
        for path in paths:
            if isinstance(path, str):
                self.temp_files.release(path, keep_s)


def _method(method: str | None) -> str:
    """The API's method by its name (or its old name), else an error naming the methods."""
    try:
        return contract.check_method(method or contract.DEFAULT_PREPROCESS_METHOD)
    except ValueError:
        known = ", ".join(contract.PREPROCESS_METHODS)
        raise gr.Error(f"Unknown method: choose one of {known}.", print_exception=False) from None
