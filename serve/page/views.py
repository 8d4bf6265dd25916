"""What the drawing page and its API show for one input: pure functions of predictors and values.

predict_all is the /predict endpoint's answer; page_outputs the page's status line, one card per
model and the preprocessing steps. No Gradio here: serve/page/app.py wires these to components, and
tests call them directly. numpy, Pillow and the serve core only.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping

import numpy as np
from PIL import Image

from flaxdigits.core import contract
from flaxdigits.core.contract import CANVAS_SIZE
from flaxdigits.serve.runtime.decode import FORMAT_NAMES, ImageInputError
from flaxdigits.serve.runtime.model_set import Drawing, as_model_set
from flaxdigits.serve.runtime.predictor import Prediction, Predictor
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError, Preprocessed, preprocess

STEP_SIDE = 112  # steps smaller than this are shown enlarged with crisp (nearest) pixels
STEP_MAX_SIDE = 160  # larger steps (a photo's original) are shown shrunk to this
UPLOAD_PROMPT = f"Upload an image of a digit ({FORMAT_NAMES})."
# What a card says of an answer that is not a plain digit (contract.ANSWERS); web/answer.js says
# the same words on the static site.
NOT_A_DIGIT_WORDS = "that doesn't look like a digit"
NOT_SURE_WORDS = "not sure — maybe {digit}"

CARD_CSS = """
.fd-card { border: 1px solid var(--border-color-primary); border-radius: var(--radius-lg);
  padding: 12px 14px; background: var(--block-background-fill); }
.fd-title { font-weight: 600; font-size: 1.05em; }
.fd-sub { color: var(--body-text-color-subdued); font-size: 0.85em; min-height: 1.2em; }
.fd-main { display: flex; align-items: baseline; gap: 12px; margin: 6px 0 10px; }
.fd-digit { font-size: 3.5em; font-weight: 700; line-height: 1; min-width: 0.7em; }
.fd-none, .fd-conf, .fd-answer { color: var(--body-text-color-subdued); }
.fd-answer { min-height: 1.3em; margin: -4px 0 6px; }
.fd-bars { display: flex; gap: 4px; align-items: stretch; height: 130px; }
.fd-col { flex: 1; display: flex; flex-direction: column; align-items: center; min-width: 0; }
.fd-pct { font-size: 0.7em; color: var(--body-text-color-subdued); height: 1.3em; }
.fd-track { flex: 1; width: 100%; display: flex; align-items: flex-end; border-radius: 3px;
  background: var(--background-fill-secondary); }
.fd-fill { width: 100%; min-height: 1px; border-radius: 3px; background: var(--neutral-400); }
.fd-top .fd-fill { background: var(--color-accent); }
.fd-label { font-size: 0.9em; margin-top: 2px; }
.fd-top .fd-label { font-weight: 700; color: var(--color-accent); }
"""

STEPS_CSS = """
.fd-steps { display: flex; gap: 8px; flex-wrap: wrap; min-height: 150px; }
.fd-step { margin: 0; text-align: center; flex: 1; min-width: 90px; }
.fd-step img { width: 100%; max-width: 160px; aspect-ratio: 1; object-fit: contain;
  image-rendering: pixelated; background: var(--background-fill-secondary);
  border-radius: var(--radius-sm); }
.fd-step figcaption { font-size: 0.8em; color: var(--body-text-color-subdued); }
"""


# ------------------------------------------------------------------------------ prediction


def classify(
    image28: np.ndarray, predictors: Mapping[str, Predictor]
) -> tuple[dict[str, Prediction], Drawing | None]:
    """Every model's prediction for one preprocessed (28, 28) image, and the drawing's answer
    when the models come with a gate (a ModelSet; None otherwise)."""
    return as_model_set(predictors).predict(image28)


def predict_all(value, method: str, predictors: Mapping[str, Predictor]) -> dict:
    """Preprocess once and classify with every model: the JSON the /predict endpoint returns.

    Args:
        value: anything preprocess() accepts (image file path, PIL image, array, editor dict).
        method: "mnist" or "box" ("seed": box's old name).
        predictors: model name -> Predictor.

    Returns:
        {"method": the method's name, "models": {name: {"digit", "confidence", "probabilities",
        "answer"}}}: the answer is "digit", "not sure" or "not a digit" (contract.ANSWERS); with
        a gate also "drawing": {"answer": "digit" or "not a digit", "score",
        "not_a_digit_below"} (model_set.Drawing), the rule every model's answer follows.

    Raises:
        EmptyCanvasError: nothing is drawn.
        ImageInputError: the image cannot be read.
        ValueError: unknown method.
    """
    method = contract.check_method(method)
    pre = preprocess(value, method)
    predictions, drawing = classify(pre.image, predictors)
    out = {"method": method, "models": {name: p.to_json() for name, p in predictions.items()}}
    return out if drawing is None else out | {"drawing": drawing.to_json()}


# -------------------------------------------------------------------------------- rendering


def model_subtitle(predictor: Predictor) -> str:
    """'101,770 parameters · 97.6% test accuracy · robust recipe', from whatever metadata the
    model carries (a recipe name outside contract.RECIPE_NAMES is not shown)."""
    parts = []
    try:
        parts.append(f"{int(predictor.metadata[contract.META_PARAMS]):,} parameters")
    except (KeyError, ValueError):
        pass
    try:
        accuracy = float(predictor.metadata[contract.META_TEST_ACCURACY])
    except (KeyError, ValueError):
        accuracy = None
    if accuracy is not None and 0.0 <= accuracy <= 1.0:
        parts.append(f"{accuracy:.1%} test accuracy")
    recipe = contract.recipe_name(predictor.metadata.get(contract.META_RECIPE, ""))
    if recipe in contract.RECIPE_NAMES:
        parts.append(f"{recipe} recipe")
    return " · ".join(parts)


def blank_canvas() -> dict:
    """The Sketchpad's starting value: a white background, so the brush is active at once.

    Gradio 6 selects the brush on load only when the editor has a value; with an empty one it
    shows "select the draw tool to start" and a person must find the brush button first.
    """
    return {"background": Image.new("RGB", CANVAS_SIZE, "white"), "layers": [], "composite": None}


def answer_words(prediction: Prediction | None) -> str:
    """What a card says besides the digit: "" for a digit (or no prediction), "not sure — maybe
    4", or "that doesn't look like a digit"."""
    if prediction is None or prediction.answer == "digit":
        return ""
    if prediction.answer == "not sure":
        return NOT_SURE_WORDS.format(digit=prediction.digit)
    return NOT_A_DIGIT_WORDS


def render_result(name: str, prediction: Prediction | None, subtitle: str = "") -> str:
    """One model's card: the digit, its confidence and a bar per class, the top one highlighted;
    a muted digit and "not sure — maybe N" when the model is not sure, a muted "?" and "that
    doesn't look like a digit" when it answers "not a digit".

    The root carries data-model, data-digit (the top class, "" without a prediction) and
    data-answer (contract.ANSWERS, "" without a prediction) for scripts and tests.
    """
    digit = "" if prediction is None else str(prediction.digit)
    answer = "" if prediction is None else prediction.answer
    probs = (0.0,) * len(contract.LABELS) if prediction is None else prediction.probabilities
    columns = []
    for label, p in zip(contract.LABELS, probs, strict=True):
        top = " fd-top" if label == digit else ""
        pct = f"{p:.0%}" if p >= 0.005 else ""
        columns.append(
            f'<div class="fd-col{top}" title="{label}: {p:.1%}">'
            f'<div class="fd-pct">{pct}</div>'
            f'<div class="fd-track"><div class="fd-fill" style="height: {100 * p:.1f}%">'
            "</div></div>"
            f'<div class="fd-label">{label}</div></div>'
        )
    described = ", ".join(
        f"{label}: {p:.1%}" for label, p in zip(contract.LABELS, probs, strict=True)
    )
    confidence = "no prediction" if prediction is None else f"{prediction.confidence:.1%} confident"
    shown = "?" if answer in ("", "not a digit") else digit
    muted = "" if answer == "digit" else " fd-none"
    name_attr = html.escape(name, quote=True)
    return (
        f'<div class="fd-card" data-model="{name_attr}" data-digit="{digit}" '
        f'data-answer="{answer}">'
        f'<div class="fd-title">{html.escape(name.upper())}</div>'
        f'<div class="fd-sub">{html.escape(subtitle)}</div>'
        f'<div class="fd-main"><span class="fd-digit{muted}">{shown}</span>'
        f'<span class="fd-conf">{confidence}</span></div>'
        f'<div class="fd-answer">{html.escape(answer_words(prediction))}</div>'
        f'<div class="fd-bars" role="img" aria-label="probabilities: {described}">'
        f"{''.join(columns)}</div></div>"
    )


def step_images(pre: Preprocessed) -> list[tuple[np.ndarray, str]]:
    """The preprocessing steps as (image, caption) for a gallery; small ones enlarged crisply."""
    captions = {
        "original": "original",
        "grayscale": "ink",
        "cropped": "cropped",
        "28x28": "28x28 input",
    }
    out = []
    for key, step in pre.steps.items():
        img = Image.fromarray(step)
        if max(img.size) < STEP_SIDE:
            scale = STEP_SIDE // max(img.size) + 1
            img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
        out.append((np.asarray(img), captions.get(key, key)))
    return out


def render_steps(steps: list[tuple[np.ndarray, str]]) -> str:
    """The steps as one HTML row of inline PNGs (data: URIs): nothing written to disk per answer."""
    figures = []
    for image, caption in steps:
        img = Image.fromarray(image)
        if max(img.size) > STEP_MAX_SIDE:
            img.thumbnail((STEP_MAX_SIDE, STEP_MAX_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        src = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        label = html.escape(caption, quote=True)
        figures.append(
            f'<figure class="fd-step"><img src="{src}" alt="{label}">'
            f"<figcaption>{label}</figcaption></figure>"
        )
    return f'<div class="fd-steps" aria-label="preprocessing steps">{"".join(figures)}</div>'


def summary(predictions: Mapping[str, Prediction]) -> str:
    """One line that says what the models answered and whether they agree (Markdown); the static
    site's status line says the same words (web/answer.js summary)."""
    answers = {p.answer for p in predictions.values()}
    if answers == {"not a digit"}:
        who = "Neither model" if len(predictions) == 2 else "No model"
        return f"{who} thinks that is a digit."
    if answers == {"digit"}:
        digits = {p.digit for p in predictions.values()}
        if len(digits) == 1:
            who = "Both models" if len(predictions) == 2 else "All models"
            return f"{who} read **{digits.pop()}**."
        parts = ", ".join(f"{name.upper()} reads **{p.digit}**" for name, p in predictions.items())
        return f"The models disagree: {parts}."
    return "; ".join(_says(name, p) for name, p in predictions.items()) + "."


def _says(name: str, prediction: Prediction) -> str:
    """One model's part of a status line where not every model reads a digit."""
    if prediction.answer == "not a digit":
        return f"{name.upper()} does not think that is a digit"
    if prediction.answer == "not sure":
        return f"{name.upper()} is not sure — maybe **{prediction.digit}**"
    return f"{name.upper()} reads **{prediction.digit}**"


def page_outputs(
    value,
    method: str,
    predictors: Mapping[str, Predictor],
    *,
    empty_message: str | None = None,
    subtitles: Mapping[str, str] | None = None,
) -> tuple[str, list[str], list[tuple[np.ndarray, str]]]:
    """Everything the page shows for one input: (status Markdown, one card per model, steps).

    An empty canvas or an unreadable image gives a message and empty cards, never an exception.
    """
    subtitles = subtitles or {}
    try:
        pre = preprocess(value, method)
    except EmptyCanvasError as e:
        message, pre = empty_message or str(e), None
    except ImageInputError as e:
        reason = str(e)
        if isinstance(value, str):  # load_image_file names the (temporary) file first
            reason = reason.removeprefix(f"{value}: ")
        message, pre = f"Cannot read this image: {reason}", None
    if pre is None:
        cards = [render_result(name, None, subtitles.get(name, "")) for name in predictors]
        return html.escape(message), cards, []
    predictions, _ = classify(pre.image, predictors)
    cards = [render_result(name, p, subtitles.get(name, "")) for name, p in predictions.items()]
    return summary(predictions), cards, step_images(pre)
