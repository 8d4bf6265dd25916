"""The static browser demo in headless Chromium: mouse strokes read by both models in the page,
checked against the Python predictor on the same canvas (issue 15), and a drawn letter answered
"not a digit" as the Gradio page answers it (issue 33), by each model's own rule or, with a gate,
by the drawing rule (serve/runtime/model_set.py).

The site is built from the 1-epoch exports, gate included (the letter's: from toy models whose
confidence depends on the ink, conftest's answering_toy_dir and gated_toy_dir) and served from a
loopback static server with its own headers. Debian's Chromium (`make browser-deps`) through
Python Playwright, as tests/test_browser.py; web/'s npm packages are installed on first use.
Without Chromium, node or npm the tests skip with the reason, except under
FLAXDIGITS_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from flaxdigits.core import contract
from flaxdigits.export import site as web
from flaxdigits.serve.page.views import answer_words, blank_canvas, classify, page_outputs
from flaxdigits.serve.runtime.model_set import load_models
from flaxdigits.serve.runtime.predictor import Predictor
from flaxdigits.serve.runtime.preprocess import preprocess
from tests.support import web_support as ws
from tests.support.browser import browser_missing
from tests.support.drawings import LETTER_X
from tests.support.toy_onnx import write_gate

pytestmark = pytest.mark.browser
# The tests on the site of the 1-epoch exports are slow too (the exports are asked for lazily,
# so conftest cannot see it); the toy site's are not.
slow = pytest.mark.slow

MAX_PIXEL_DIFF = 2  # of 255 (tests/test_web_parity.py: the two agree exactly on its set)
MAX_PROB_DIFF = 1e-4
ONE = [(0.5, 0.15), (0.5, 0.85)]
SEVEN = [(0.3, 0.2), (0.7, 0.2), (0.45, 0.85)]


def empty_message() -> str:
    """What the Gradio page's status line says for an empty canvas."""
    status, _, _ = page_outputs(blank_canvas(), contract.DEFAULT_PREPROCESS_METHOD, {})
    return html.unescape(status)


@pytest.fixture(scope="module")
def site(request, tmp_path_factory):
    reason = browser_missing()
    if reason:
        ws.unavailable(reason)
    ws.require_node()  # npm ci in web/ when needed
    models = request.getfixturevalue("exported_models")  # trains: only when needed
    out = tmp_path_factory.mktemp("site")
    web.build_site(models, out)
    return out, models


def toy_site(models, tmp_path_factory) -> tuple:
    """(the site's folder, models): the site built from a toy models folder."""
    reason = browser_missing()
    if reason:
        ws.unavailable(reason)
    ws.require_node()
    out = tmp_path_factory.mktemp(f"site_of_{models.name}")
    web.build_site(models, out)
    return out, models


@pytest.fixture(scope="module")
def answering_site(answering_toy_dir, tmp_path_factory):
    """The site over the toys that read 1 from an upright stroke and nothing from an "X"."""
    return toy_site(answering_toy_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def gated_site(gated_toy_dir, tmp_path_factory):
    """The same toys with a gate whose drawing rule says "not a digit" under 0.5."""
    return toy_site(gated_toy_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def lenient_site(answering_toy_dir, tmp_path_factory):
    """The same toys with a gate whose drawing rule never says "not a digit"."""
    models = tmp_path_factory.mktemp("lenient_gate_models")
    shutil.copytree(answering_toy_dir, models, dirs_exist_ok=True)
    write_gate(models, below=0.0)
    return toy_site(models, tmp_path_factory)


@pytest.fixture(scope="module")
def site_url(site):
    with ws.static_server(site[0]) as url:
        yield url


@pytest.fixture(scope="module")
def predictors(site):
    """Both models with the gate and its drawing rule, as the Gradio page loads them."""
    models = load_models(site[1])
    assert models.gate is not None  # the exports' gate: the page answers by its rule
    return models


@pytest.fixture
def page(site_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context, page = ws.open_page(p, site_url, tmp_path / "profile")
        try:
            yield page
        finally:
            context.close()


def stroke(page, points, steps=4) -> None:
    """One mouse stroke through points given as fractions of the drawing canvas (x, y)."""
    ws.mouse_stroke(page, page.locator("#sketch").bounding_box(), points, steps)


def settle(page, passes_before: int) -> None:
    """Wait until a pass started after the last action has finished and none is queued."""
    page.wait_for_function(f"window.fdStats.passMs.length > {passes_before} && window.fdStats.idle")


def act(page, action) -> None:
    before = page.evaluate("window.fdStats.passMs.length")
    action()
    settle(page, before)


def shown(page) -> dict:
    """Both cards' digits and probabilities, their answers and words, the 28x28 input, the
    drawing's answer under the gate's rule (None without a gate) and the status line."""
    cards, answers = {}, {}
    for name in contract.MODEL_NAMES:
        card = page.locator(f"#result-{name}")
        probs = card.get_attribute("data-probabilities")
        cards[name] = (card.get_attribute("data-digit"), json.loads(probs) if probs else None)
        answers[name] = (card.get_attribute("data-answer"), card.locator(".fd-answer").inner_text())
    return {
        "cards": cards,
        "answers": answers,
        "input": page.evaluate("window.fdLastInput"),
        "drawing": page.evaluate("window.fdLastDrawing ?? null"),
        "status": page.inner_text("#status"),
    }


def canvas_rgba(page) -> np.ndarray:
    """The drawing canvas's pixels, read back losslessly as PNG."""
    url = page.evaluate("document.getElementById('sketch').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


def check_against_python(page, predictors, method) -> dict:
    """The page's input, answers and drawing's answer vs preprocess + the predictors (a ModelSet:
    with the gate, under its drawing rule, as the Gradio page answers) on the same canvas."""
    seen = shown(page)
    reference = preprocess(canvas_rgba(page), method).image  # (28, 28) float32
    expected = np.rint(reference * 255).astype(int)
    got = np.array(seen["input"], int).reshape(28, 28)
    assert np.abs(got - expected).max() <= MAX_PIXEL_DIFF
    predictions, drawing = classify(reference, predictors)
    for name, ref in predictions.items():
        digit, probs = seen["cards"][name]
        assert digit == str(ref.digit), (name, digit, ref.digit)
        assert seen["answers"][name] == (ref.answer, answer_words(ref)), name
        assert np.abs(np.array(probs) - np.array(ref.probabilities)).max() <= MAX_PROB_DIFF
    if drawing is None:
        assert seen["drawing"] is None
    else:
        page_drawing = seen["drawing"]
        assert page_drawing is not None, "the page ran no gate"
        assert page_drawing["answer"] == drawing.answer
        assert page_drawing["not_a_digit_below"] == drawing.not_a_digit_below
        assert abs(page_drawing["score"] - drawing.score) <= MAX_PROB_DIFF
    return seen


def assert_empty(page, message) -> None:
    seen = shown(page)
    assert seen["status"] == message
    assert seen["input"] is None
    assert all(digit == "" and probs is None for digit, probs in seen["cards"].values())
    assert all(answer == ("", "") for answer in seen["answers"].values())
    assert seen["drawing"] is None


@slow
def test_strokes_are_read_in_the_page_as_python_reads_them(page, predictors, site_url):
    message = empty_message()
    assert page.inner_text("#status") == message  # as the Gradio page opens

    act(page, lambda: stroke(page, ONE))
    seen = check_against_python(page, predictors, "mnist")
    assert {name: card[0] for name, card in seen["cards"].items()} == {"mlp": "1", "cnn": "1"}
    assert seen["status"] == "Both models read 1."

    act(page, lambda: page.check("input[value='box']"))
    check_against_python(page, predictors, "box")
    act(page, lambda: page.check("input[value='mnist']"))

    act(page, lambda: page.click("#clear"))  # a cleared canvas: the Gradio page's message
    assert_empty(page, message)

    act(page, lambda: stroke(page, SEVEN))
    seen = check_against_python(page, predictors, "mnist")
    assert {name: card[0] for name, card in seen["cards"].items()} == {"mlp": "7", "cnn": "7"}

    act(page, lambda: page.click("#undo"))  # wiped stroke by stroke: the same message
    assert_empty(page, message)
    assert page.is_disabled("#undo") and page.is_disabled("#clear")

    # Every stroke's answer was timed, and nothing left the page's origin or broke its CSP.
    assert len(page.evaluate("window.fdStats.strokeToAnswerMs")) == 2
    assert page.requested and all(url.startswith(site_url) for url in page.requested)
    assert page.evaluate("window.__csp") == []
    assert page.errors == []


@slow
def test_metadata_shows_each_models_version_and_accuracy(page, site):
    site_json = json.loads((site[0] / web.SITE_JSON).read_text())
    for model in site_json["models"]:
        meta = model["metadata"]
        about = page.inner_text(f"#about p[data-model='{model['name']}']")
        assert f"flaxdigits {meta[contract.META_VERSION]}" in about
        accuracy = float(meta[contract.META_TEST_ACCURACY])
        assert f"test accuracy {100 * accuracy:.2f}%" in about
        subtitle = page.inner_text(f"#result-{model['name']} .fd-sub")
        assert f"{100 * accuracy:.1f}% test accuracy" in subtitle


@slow
def test_without_webassembly_simd_the_page_says_so_and_still_shows_the_input(site_url, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context, page = ws.open_page(p, site_url, tmp_path / "profile", init_scripts=[ws.NO_SIMD])
        try:
            assert page.evaluate("document.body.dataset.ready") == "no-models"
            assert "no SIMD" in page.inner_text("#status")
            act(page, lambda: stroke(page, SEVEN))
            seen = shown(page)
            assert seen["input"] is not None  # preprocessing is plain JavaScript
            assert all(digit == "" for digit, _ in seen["cards"].values())
            assert "no SIMD" in seen["status"]
            assert page.errors == []
        finally:
            context.close()


@slow
def test_phone_width_fits_and_draws_with_touch(site_url, tmp_path, predictors):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context, page = ws.open_page(
            p,
            site_url,
            tmp_path / "profile",
            viewport={"width": 375, "height": 740},
            has_touch=True,
            is_mobile=True,
        )
        try:
            assert page.evaluate("document.documentElement.scrollWidth") <= 375
            box = page.locator("#sketch").bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 375

            def swipe():
                cdp = context.new_cdp_session(page)
                points = [
                    (box["x"] + fx * box["width"], box["y"] + fy * box["height"])
                    for fx, fy in [(0.5, 0.15), (0.5, 0.5), (0.5, 0.85)]
                ]
                for i, (x, y) in enumerate(points):
                    kind = "touchStart" if i == 0 else "touchMove"
                    cdp.send(
                        "Input.dispatchTouchEvent",
                        {"type": kind, "touchPoints": [{"x": x, "y": y}]},
                    )
                cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

            act(page, swipe)
            seen = check_against_python(page, predictors, "mnist")
            assert all(digit != "" for digit, _ in seen["cards"].values())
        finally:
            context.close()


def test_a_drawn_letter_is_not_a_digit_in_the_page_as_in_python(answering_site, tmp_path):
    predictors = {n: Predictor(answering_site[1] / f"{n}.onnx") for n in contract.MODEL_NAMES}
    with ws.served_page(answering_site[0], tmp_path / "profile") as page:
        for line in LETTER_X:  # an "X", stroke by stroke
            act(page, lambda line=line: stroke(page, line))
        seen = check_against_python(page, predictors, "mnist")
        words = "that doesn't look like a digit"
        assert seen["answers"] == {n: ("not a digit", words) for n in predictors}
        assert seen["status"] == "Neither model thinks that is a digit."
        assert page.inner_text("#result-mlp .fd-digit") == "?"
        assert seen["drawing"] is None  # no gate: each model's own rule

        act(page, lambda: page.click("#clear"))
        act(page, lambda: stroke(page, ONE))
        seen = check_against_python(page, predictors, "mnist")
        assert seen["answers"] == {n: ("digit", "") for n in predictors}
        assert seen["status"] == "Both models read 1."
        assert page.errors == [] and page.evaluate("window.__csp") == []


def test_with_a_gate_the_drawing_rule_answers_a_letter_not_a_digit_and_a_one_a_digit(
    gated_site, tmp_path
):
    models = load_models(gated_site[1])
    assert models.gate is not None
    with ws.served_page(gated_site[0], tmp_path / "profile") as page:
        for line in LETTER_X:
            act(page, lambda line=line: stroke(page, line))
        seen = check_against_python(page, models, "mnist")  # the drawing's answer included
        assert seen["drawing"]["answer"] == "not a digit"
        assert seen["drawing"]["score"] < seen["drawing"]["not_a_digit_below"] == 0.5
        words = "that doesn't look like a digit"
        assert seen["answers"] == {n: ("not a digit", words) for n in contract.MODEL_NAMES}
        assert seen["status"] == "Neither model thinks that is a digit."

        act(page, lambda: page.click("#clear"))
        assert_empty(page, empty_message())  # no drawing's answer left over either
        act(page, lambda: stroke(page, ONE))
        seen = check_against_python(page, models, "mnist")
        assert seen["drawing"]["answer"] == "digit"
        assert seen["answers"] == {n: ("digit", "") for n in contract.MODEL_NAMES}
        assert seen["status"] == "Both models read 1."
        # The gate shows no digit of its own: a line under the cards, no card.
        assert page.locator(".fd-card").count() == len(contract.MODEL_NAMES)
        assert "GATE" in page.inner_text("#about p[data-model='gate']")
        assert page.errors == [] and page.evaluate("window.__csp") == []


def test_a_gate_that_finds_a_letter_digit_like_makes_each_not_a_digit_not_sure(
    lenient_site, tmp_path
):
    models = load_models(lenient_site[1])
    with ws.served_page(lenient_site[0], tmp_path / "profile") as page:
        for line in LETTER_X:  # each toy alone calls it "not a digit" (the test above)
            act(page, lambda line=line: stroke(page, line))
        seen = check_against_python(page, models, "mnist")
        assert seen["drawing"]["answer"] == "digit"
        assert {a for a, _ in seen["answers"].values()} == {"not sure"}
        assert "is not sure" in seen["status"]
        assert page.errors == []
