"""The page's components and the events wired to them: the Draw and Upload tabs, the
preprocessing choice, a card per model, the steps, and the one named API endpoint (/predict).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from flaxdigits.core import contract
from flaxdigits.serve.page.budgets import describe_budgets
from flaxdigits.serve.page.components import bounded_sketchpad, path_file
from flaxdigits.serve.page.handlers import Handlers
from flaxdigits.serve.page.views import (
    CANVAS_SIZE,
    CARD_CSS,
    STEPS_CSS,
    blank_canvas,
    render_result,
    render_steps,
)
from flaxdigits.serve.runtime.decode import (
    EXTENSIONS,
    FORMAT_NAMES,
)
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError

API_NAME = "predict"

# Radius in canvas pixels: a ~28 px stroke on a digit ~300 px tall is MNIST's stroke/height ratio.
BRUSH_RADIUS = 14
ERASER_RADIUS = 24
UPLOAD_TYPES = list(EXTENSIONS)
API_DESCRIPTION = (
    f"Read the digit in an image file ({FORMAT_NAMES}) with the MLP and the CNN. "
    'Returns {"method", "models": {"mlp": {"digit", "confidence", "probabilities" (10)}, '
    '"cnn": {...}}}. An empty or unreadable image is an error that says why.'
)
METHOD_INFO = (
    "mnist: fit the ink into 20x20 and centre it by mass, the way MNIST was made. "
    "box: pad the ink box to a square with 20% margins."
)
INTRO = """\
# flaxdigits: draw a digit
Draw a digit from 0 to 9 with the mouse or a finger: the MLP and the CNN, trained on MNIST and
run by onnxruntime, read it as you draw. Or upload a photo or scan of a handwritten digit.
"""
# Under the intro where the models come with a gate (serve/runtime/model_set.py).
GATE_NOTE = """
Draw something else and a third model, the gate, trained on scribbles and letters, tells the
two that it is not a digit.
"""


@dataclass
class Page:
    """The page's components, for wiring their events."""

    source: gr.State
    sketch: gr.Sketchpad
    upload: gr.File
    method: gr.Radio
    draw_tab: gr.Tab
    upload_tab: gr.Tab
    status: gr.Markdown
    cards: list[gr.HTML]
    steps: gr.HTML
    api_image: gr.File
    api_method: gr.Textbox
    api_result: gr.JSON
    api_trigger: gr.Button

    @property
    def outputs(self) -> list:
        return [self.source, self.status, *self.cards, self.steps]


def layout(handlers: Handlers) -> Page:
    """The page's components, inside the current Blocks."""
    gr.Markdown(INTRO + (GATE_NOTE if handlers.predictors.gate else ""))
    source = gr.State("draw")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=440):
            sketch, upload, draw_tab, upload_tab = input_tabs()
            method = gr.Radio(
                list(contract.PREPROCESS_METHODS),
                value=contract.DEFAULT_PREPROCESS_METHOD,
                label="Preprocessing",
                info=METHOD_INFO,
                elem_id="method",
            )
        with gr.Column(scale=1, min_width=440):
            status = gr.Markdown(str(EmptyCanvasError()), elem_id="status")
            with gr.Row():
                cards = [
                    gr.HTML(
                        render_result(name, None, handlers.subtitles[name]),
                        css_template=CARD_CSS,
                        js_on_load=None,
                        elem_id=f"result-{name}",
                        min_width=220,
                    )
                    for name in handlers.predictors
                ]
            # Inline images, not a Gallery: a Gallery writes four files per answer.
            steps = gr.HTML(
                render_steps([]),
                label="Preprocessing steps",
                css_template=STEPS_CSS,
                js_on_load=None,
                elem_id="steps",
            )
            with gr.Accordion("About: limits", open=False):
                gr.Markdown(f"```\n{describe_budgets()}\n```", elem_id="budgets")
    # The API: hidden inputs and output, one named endpoint; the page's events stay private.
    api_image = path_file(file_types=UPLOAD_TYPES, label="image", visible=False)
    # Text, not the page's radio: the endpoint also takes "seed", box's name before 0.2.
    api_method = gr.Textbox(contract.DEFAULT_PREPROCESS_METHOD, label="method", visible=False)
    api_result = gr.JSON(label="result", visible=False)
    api_trigger = gr.Button(visible=False)
    return Page(
        source, sketch, upload, method, draw_tab, upload_tab, status, cards, steps,
        api_image, api_method, api_result, api_trigger,
    )  # fmt: skip


def input_tabs():
    """The Draw tab's canvas and the Upload tab's file: (sketch, upload, draw_tab, upload_tab)."""
    with gr.Tabs():
        with gr.Tab("Draw") as draw_tab:
            sketch = bounded_sketchpad(
                value=blank_canvas(),
                type="filepath",  # our preprocess hands over bytes/paths, undecoded
                image_mode="RGBA",
                canvas_size=CANVAS_SIZE,
                height=CANVAS_SIZE[1] + 110,
                brush=gr.Brush(
                    default_size=BRUSH_RADIUS,
                    colors=["#000000"],
                    default_color="#000000",
                    color_mode="fixed",
                ),
                eraser=gr.Eraser(default_size=ERASER_RADIUS),
                layers=False,
                transforms=(),
                buttons=["download"],
                format="png",
                label="Draw a digit (0-9)",
                elem_id="sketch",
            )
        with gr.Tab("Upload") as upload_tab:
            # A file, not gr.Image: gr.Image decodes the upload itself and fails on a bad file
            # with a bare "Error"; here load_image_file reads it (format allow-list, pixel cap)
            # and says what is wrong.
            upload = path_file(
                file_types=UPLOAD_TYPES, label="Upload an image of a digit", elem_id="upload"
            )
    return sketch, upload, draw_tab, upload_tab


def wire(page: Page, handlers: Handlers) -> None:
    """The page's events and the /predict endpoint, inside the current Blocks."""
    common = {
        "show_progress": "hidden",
        "api_visibility": "private",
        "concurrency_id": "predict",
        "trigger_mode": "always_last",  # while drawing: at most one queued, the latest
    }
    outputs = page.outputs
    # .input fires once per finished stroke (and on undo/redo); .change is not dispatched.
    page.sketch.input(
        handlers.on_stroke, [page.source, page.sketch, page.method], outputs, **common
    )
    page.sketch.clear(handlers.on_clear, [page.method], [page.sketch, *outputs], **common)
    page.draw_tab.select(handlers.on_draw, [page.sketch, page.method], outputs, **common)
    page.upload.change(handlers.on_upload, [page.upload, page.method], outputs, **common)
    page.upload_tab.select(handlers.on_upload, [page.upload, page.method], outputs, **common)
    page.method.change(
        handlers.on_method, [page.source, page.sketch, page.upload, page.method], outputs, **common
    )
    page.api_trigger.click(
        handlers.predict,
        [page.api_image, page.api_method],
        page.api_result,
        api_name=API_NAME,
        api_description=API_DESCRIPTION,
        concurrency_id="predict",
    )
