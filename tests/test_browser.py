"""The drawing page in headless Chromium: strokes drawn with the mouse are read by both models,
and a drawn letter is answered "not a digit" (issue 33).

Debian's Chromium (/usr/bin/chromium, `make browser-deps`) driven by Python Playwright; nothing
downloads a browser. Without Chromium or Playwright the test is skipped with the reason, unless
FLAXDIGITS_REQUIRE_BROWSER=1 (CI), where it fails instead.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from flaxdigits.core import contract
from flaxdigits.serve.page import app
from tests.support import web_support
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, browser_missing
from tests.support.drawings import LETTER_X, ONE
from tests.support.ports import free_port

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000  # software rendering on 2 cores: each stroke's canvas read-back is slow


def require_browser() -> None:
    """Skip with the reason where no browser can run (fail under FLAXDIGITS_REQUIRE_BROWSER=1)."""
    reason = browser_missing()
    if reason:
        if os.environ.get("FLAXDIGITS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FLAXDIGITS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


@contextlib.contextmanager
def served(models_dir: Path):
    """The page over models_dir on a free loopback port: yields its URL."""
    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        # configure_pillow is process-wide (tested with preprocess): keep it out of the session.
        mp.setattr(app, "configure_pillow", lambda: None)
        for name in ("GRADIO_TEMP_DIR", "FORWARDED_ALLOW_IPS"):  # launch sets them: restore
            mp.setenv(name, os.environ.get(name, ""))
        demo = app.launch(models_dir=models_dir, host="127.0.0.1", port=port, block=False)
        try:
            yield demo.local_url
        finally:
            demo.close()


@pytest.fixture(scope="module")
def page_url(request):
    """The page with the 1-epoch exports on a free loopback port (checked for a browser first)."""
    require_browser()
    exported_models = request.getfixturevalue("exported_models")  # trains: only when needed
    with served(exported_models) as url:
        yield url


@pytest.fixture(scope="module")
def answering_page_url(gate_decides_toy_dir):
    """The page over toy models that read 1 from an upright stroke and, with no rule of their
    own, only the gate's drawing rule to answer "not a digit" to ink spread over the box
    (conftest's gate_decides_toy_dir): no training, deterministic."""
    require_browser()
    with served(gate_decides_toy_dir) as url:
        yield url


@contextlib.contextmanager
def browser_page(url: str, profile: Path):
    """A fresh headless Chromium on url; the page records Content-Security-Policy complaints."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),  # a fresh --user-data-dir
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.csp_violations = []  # the guard's Content-Security-Policy must not break the page

            def on_console(message):
                if "Content Security Policy" in message.text:
                    page.csp_violations.append(message.text)

            page.on("console", on_console)
            page.goto(url)
            yield page
        finally:
            context.close()


@pytest.fixture
def page(page_url, tmp_path):
    with browser_page(page_url, tmp_path / "profile") as page:
        yield page


@pytest.fixture
def answering_page(answering_page_url, tmp_path):
    with browser_page(answering_page_url, tmp_path / "profile") as page:
        yield page


def stroke(page, points, steps=2) -> None:
    """One mouse stroke through points given as fractions of the drawing canvas (x, y): the
    square canvas, centred in its element."""
    square = web_support.centred_square(page.locator("#sketch canvas").first.bounding_box())
    web_support.mouse_stroke(page, square, points, steps)


def read_digits(page) -> dict[str, str]:
    """Wait until both cards show a digit; return them."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.fd-card')].length === 2 && "
        "[...document.querySelectorAll('.fd-card')].every(c => c.dataset.digit !== '')"
    )
    return {
        name: page.get_attribute(f"#result-{name} .fd-card", "data-digit")
        for name in contract.MODEL_NAMES
    }


def read_answers(page, answer: str) -> dict[str, tuple[str, str]]:
    """Wait until both cards give this answer; return each card's (digit, words shown), read
    in the same look at the page as the answers (a card re-rendered for a later stroke between
    two reads once gave words of another render)."""
    found = page.wait_for_function(
        """(answer) => {
            const cards = [...document.querySelectorAll('.fd-card')];
            if (cards.length !== 2 || !cards.every(c => c.dataset.answer === answer)) return null;
            return Object.fromEntries(cards.map(c => [c.dataset.model,
                [c.dataset.digit, c.querySelector('.fd-answer').innerText]]));
        }""",
        arg=answer,
    ).json_value()
    return {name: tuple(found[name]) for name in contract.MODEL_NAMES}


def wait_for_empty(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.fd-card')].every(c => c.dataset.digit === '')"
    )


def status_becomes(page, words: str) -> bool:
    """Wait until the status line says exactly `words` (a timeout fails the test)."""
    page.wait_for_function(
        "(words) => document.getElementById('status').innerText.trim() === words", arg=words
    )
    return page.inner_text("#status").strip() == words


def test_drawn_strokes_are_read_by_both_models(page):
    # The brush is active as the page opens: no tool button to find first.
    page.wait_for_selector("#sketch button[aria-label='Brush'].highlight")
    assert "Draw a digit first" in page.inner_text("#status")

    stroke(page, [(0.5, 0.15), (0.5, 0.85)])  # a "1"
    digits = read_digits(page)
    # Seen once in a fresh-clone CI run: both cards read "" right after showing a digit. The
    # status line says which event left the page empty if it happens again.
    assert digits == {"mlp": "1", "cnn": "1"}, page.inner_text("#status")
    assert page.locator("#steps img").count() == 4
    if shot := os.environ.get("FLAXDIGITS_SCREENSHOT"):
        page.screenshot(path=shot, full_page=True)

    # Clearing shows the message again and leaves the brush ready for the next digit.
    page.click("#sketch button[aria-label='Clear canvas']")
    wait_for_empty(page)
    page.wait_for_selector("#sketch button[aria-label='Brush'].highlight")
    assert "Draw a digit first" in page.inner_text("#status")

    stroke(page, [(0.3, 0.2), (0.7, 0.2), (0.45, 0.85)])  # a "7"
    assert read_digits(page) == {"mlp": "7", "cnn": "7"}
    assert "Both models read" in page.inner_text("#status")
    assert page.csp_violations == []


def test_a_drawn_letter_is_not_a_digit_and_a_drawn_one_is(answering_page):
    page = answering_page
    page.wait_for_selector("#sketch button[aria-label='Brush'].highlight")
    for line in LETTER_X:  # an "X", stroke by stroke
        stroke(page, line)
    shown = read_answers(page, "not a digit")
    assert all(words == "that doesn't look like a digit" for _, words in shown.values())
    # The status line alone: Gradio shows a timer ("0.1s") in it while a later stroke's event
    # is pending, so the wait is for the words and nothing else.
    assert status_becomes(page, "Neither model thinks that is a digit.")
    assert page.inner_text("#result-mlp .fd-digit") == "?"

    page.click("#sketch button[aria-label='Clear canvas']")
    wait_for_empty(page)
    page.wait_for_selector("#sketch button[aria-label='Brush'].highlight")
    stroke(page, ONE[0])
    assert read_answers(page, "digit") == {"mlp": ("1", ""), "cnn": ("1", "")}
    assert status_becomes(page, "Both models read 1.")
    assert page.csp_violations == []
