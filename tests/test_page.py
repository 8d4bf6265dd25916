"""What the page and its API show for one input, on two toy models (any ink -> 3, resp. 8): the
/predict JSON, the status line, the cards and the preprocessing steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from flaxdigits.serve.page import views as page
from flaxdigits.serve.runtime.decode import ImageInputError
from flaxdigits.serve.runtime.predictor import Prediction, Predictor
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError
from tests.support.drawings import LETTER_X, ONE, card_answer, card_digit, drawing, strokes


@pytest.mark.parametrize("method", ["mnist", "box", "seed"])
def test_predict_all_returns_both_models_as_json(toys, method):
    result = page.predict_all(drawing(), method, toys)
    assert json.loads(json.dumps(result)) == result
    assert result["method"] == {"seed": "box"}.get(method, method)  # box's name before 0.2
    assert list(result["models"]) == ["mlp", "cnn"]
    for name, digit in (("mlp", 3), ("cnn", 8)):
        model = result["models"][name]
        assert set(model) == {"digit", "confidence", "probabilities", "answer"}
        assert model["digit"] == digit
        assert model["answer"] == "digit"  # a model file without an answer rule
        assert len(model["probabilities"]) == 10
        assert sum(model["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert model["confidence"] == max(model["probabilities"])


def test_predict_all_on_an_empty_canvas_raises_instead_of_guessing(toys):
    with pytest.raises(EmptyCanvasError):
        page.predict_all(Image.new("RGB", (400, 400), "white"), "mnist", toys)
    with pytest.raises(ImageInputError):
        page.predict_all(np.zeros((3, 3, 3, 3), np.uint8), "mnist", toys)


def test_sketchpad_value_is_read_like_the_image_it_shows(toys):
    """Gradio's editor dict: white background, a transparent layer holding the strokes."""
    strokes = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    ImageDraw.Draw(strokes).line([(120, 90), (280, 90), (170, 320)], fill="black", width=24)
    background = Image.new("RGBA", (400, 400), "white")
    value = {
        "background": background,
        "layers": [strokes],
        "composite": Image.alpha_composite(background, strokes),
    }
    assert page.predict_all(value, "mnist", toys) == page.predict_all(drawing(), "mnist", toys)
    blank = page.blank_canvas()
    assert blank["background"].size == page.CANVAS_SIZE
    with pytest.raises(EmptyCanvasError):
        page.predict_all(blank, "mnist", toys)


def test_page_shows_both_cards_the_disagreement_and_four_steps(toys):
    status, cards, steps = page.page_outputs(drawing(), "mnist", toys)
    assert status == "The models disagree: MLP reads **3**, CNN reads **8**."
    assert [card_digit(c) for c in cards] == ["3", "8"]
    assert [card_answer(c) for c in cards] == ["digit", "digit"]
    assert [caption for _, caption in steps] == [
        "original",
        "ink",
        "cropped",
        "28x28 input",
    ]
    model_input = steps[-1][0]
    assert model_input.dtype == np.uint8
    assert min(model_input.shape[:2]) >= page.STEP_SIDE  # 28x28 enlarged, whole pixels
    assert model_input.shape[0] % 28 == 0


def test_steps_are_inline_images_so_no_answer_writes_a_file(toys):
    import base64
    import io
    import re

    from PIL import Image

    _, _, steps = page.page_outputs(drawing(size=(1200, 900)), "mnist", toys)
    html = page.render_steps([*steps, (steps[-1][0], '<b>"x"</b>')])
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(sources) == 5
    sizes = [Image.open(io.BytesIO(base64.b64decode(src))).size for src in sources]
    assert max(max(size) for size in sizes) <= page.STEP_MAX_SIDE  # the 1200x900 original too
    assert "<b>" not in html and "&lt;b&gt;&quot;x&quot;" in html
    assert page.render_steps([]).count("<img") == 0


def test_empty_canvas_shows_a_message_and_no_prediction(toys):
    for value in (None, page.blank_canvas(), Image.new("L", (400, 400), 255)):
        status, cards, steps = page.page_outputs(value, "mnist", toys)
        assert status == "Draw a digit first: the canvas is empty."
        assert [card_digit(c) for c in cards] == ["", ""]
        assert [card_answer(c) for c in cards] == ["", ""]
        assert "no prediction" in cards[0]
        assert steps == []
    status, _, _ = page.page_outputs(None, "mnist", toys, empty_message=page.UPLOAD_PROMPT)
    assert status == page.UPLOAD_PROMPT


def test_unreadable_upload_says_why_without_the_temporary_path(toys, tmp_path):
    path = tmp_path / "digit.png"
    path.write_bytes(b"not a png at all")
    status, cards, steps = page.page_outputs(str(path), "mnist", toys)
    assert status.startswith("Cannot read this image: not an image")
    assert str(tmp_path) not in status
    assert [card_digit(c) for c in cards] == ["", ""]
    assert steps == []


def test_card_highlights_exactly_the_top_class(toys):
    prediction = toys["cnn"].predict(np.ones((28, 28), np.float32))
    card = page.render_result("cnn", prediction, "sub")
    assert card.count("fd-top") == 1
    assert 'class="fd-col fd-top" title="8: ' in card
    assert card.count('class="fd-fill"') == 10
    assert f"{prediction.confidence:.1%} confident" in card


def test_card_escapes_names_and_subtitles():
    card = page.render_result('<img src=x onerror="alert(1)">', None, "<b>")
    assert "<img" not in card and "<b>" not in card
    assert "&lt;IMG" in card and "&lt;b&gt;" in card


@pytest.mark.parametrize(
    ("recipe", "shown"),
    [
        ("robust", "robust recipe"),
        ("original", "original recipe"),
        ("seed", "original recipe"),  # a model file from before the rename
        ("<b>x</b>", None),
    ],
)
def test_the_model_card_names_the_recipe_it_shows(tmp_path, recipe, shown):
    from flaxdigits.core import contract
    from tests.support.toy_onnx import toy_model_bytes

    path = tmp_path / "cnn.onnx"
    path.write_bytes(toy_model_bytes(metadata={contract.META_RECIPE: recipe}))
    subtitle = page.model_subtitle(Predictor(path))
    if shown is None:
        assert "recipe" not in subtitle and "<b>" not in subtitle
    else:
        assert subtitle.endswith(f" · {shown}") or subtitle == shown


# ----------------------------------------------------------------- "not sure", "not a digit"


def answered(digit: int, confidence: float, answer: str) -> Prediction:
    rest = (1.0 - confidence) / 9
    probs = tuple(confidence if d == digit else rest for d in range(10))
    return Prediction(digit=digit, confidence=confidence, probabilities=probs, answer=answer)


def test_a_card_says_not_a_digit_or_not_sure_and_carries_the_answer():
    card = page.render_result("cnn", answered(4, 0.3, "not a digit"))
    assert (card_digit(card), card_answer(card)) == ("4", "not a digit")
    assert "that doesn&#x27;t look like a digit" in card
    assert '<span class="fd-digit fd-none">?</span>' in card  # no digit shown, a muted "?"
    card = page.render_result("cnn", answered(4, 0.6, "not sure"))
    assert (card_digit(card), card_answer(card)) == ("4", "not sure")
    assert "not sure — maybe 4" in card
    assert '<span class="fd-digit fd-none">4</span>' in card
    card = page.render_result("cnn", answered(4, 0.95, "digit"))
    assert (card_digit(card), card_answer(card)) == ("4", "digit")
    assert '<span class="fd-digit">4</span>' in card and "maybe" not in card
    assert "look like" not in card
    assert card_answer(page.render_result("cnn", None)) == ""


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([(7, "digit"), (7, "digit")], "Both models read **7**."),
        ([(3, "digit"), (8, "digit")], "The models disagree: MLP reads **3**, CNN reads **8**."),
        ([(3, "not a digit"), (8, "not a digit")], "Neither model thinks that is a digit."),
        (
            [(3, "not sure"), (3, "digit")],
            "MLP is not sure — maybe **3**; CNN reads **3**.",
        ),
        (
            [(3, "digit"), (8, "not a digit")],
            "MLP reads **3**; CNN does not think that is a digit.",
        ),
        (
            [(3, "not a digit"), (5, "not sure")],
            "MLP does not think that is a digit; CNN is not sure — maybe **5**.",
        ),
    ],
)
def test_the_status_line_says_what_each_model_answered(answers, expected):
    predictions = {
        name: answered(digit, 0.5, answer)
        for name, (digit, answer) in zip(("mlp", "cnn"), answers, strict=True)
    }
    assert page.summary(predictions) == expected


def test_a_drawn_letter_is_not_a_digit_and_a_drawn_one_is(answering_toy_dir):
    from flaxdigits.serve.page.handlers import load_predictors

    models = load_predictors(answering_toy_dir)
    status, cards, _ = page.page_outputs(strokes(LETTER_X), "mnist", models)
    assert status == "Neither model thinks that is a digit."
    assert [card_answer(c) for c in cards] == ["not a digit", "not a digit"]
    result = page.predict_all(strokes(LETTER_X), "mnist", models)
    assert [m["answer"] for m in result["models"].values()] == ["not a digit"] * 2
    status, cards, _ = page.page_outputs(strokes(ONE), "mnist", models)
    assert status == "Both models read **1**."
    assert [(card_digit(c), card_answer(c)) for c in cards] == [("1", "digit")] * 2
