"""The drawing page: draw or upload a digit and watch the MLP and the CNN read it side by side.

Gradio Blocks over the JAX-free serving core (preprocess + Predictor): numpy, Pillow, onnxruntime
and gradio only. What the page and the API show lives in serve/page/views.py as pure functions that
tests call directly (predict_all, page_outputs, render_result); build_app wires them to
components and launch serves the page on 127.0.0.1 by default, with a public share link only when
asked.

One named API endpoint, for gradio_client:

    /predict(image: image file, method: "mnist" | "seed" = "mnist") -> JSON
    {"method": "mnist", "models": {"mlp": {"digit": 7, "confidence": 0.98, "probabilities": [10]},
                                   "cnn": {...}}}

An empty or unreadable image is an error with a readable message (gradio_client raises AppError).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from flaxdigits.core import contract
from flaxdigits.serve.page.budgets import SESSIONS, describe_budgets
from flaxdigits.serve.page.components import bounded_sketchpad, path_file
from flaxdigits.serve.page.guard import Guard, bound_logs
from flaxdigits.serve.page.temp_files import TempFiles
from flaxdigits.serve.page.views import (
    CANVAS_SIZE,
    CARD_CSS,
    STEPS_CSS,
    UPLOAD_PROMPT,
    blank_canvas,
    model_subtitle,
    page_outputs,
    predict_all,
    render_result,
    render_steps,
)
from flaxdigits.serve.runtime.decode import (
    EXTENSIONS,
    FORMAT_NAMES,
    MAX_FILE_BYTES,
    ImageInputError,
    configure_pillow,
)
from flaxdigits.serve.runtime.predictor import Predictor
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError

API_NAME = "predict"

# Radius in canvas pixels: a ~28 px stroke on a digit ~300 px tall is MNIST's stroke/height ratio.
BRUSH_RADIUS = 14
ERASER_RADIUS = 24
UPLOAD_TYPES = list(EXTENSIONS)
QUEUE_MAX_SIZE = 64  # waiting events: 50+ API clients at once; beyond it a clean "queue full"
DELETE_CACHE = (900, 1800)  # every 15 min, delete uploads and outputs older than 30 min

API_DESCRIPTION = (
    f"Read the digit in an image file ({FORMAT_NAMES}) with the MLP and the CNN. "
    'Returns {"method", "models": {"mlp": {"digit", "confidence", "probabilities" (10)}, '
    '"cnn": {...}}}. An empty or unreadable image is an error that says why.'
)
METHOD_INFO = (
    "mnist: fit the ink into 20x20 and centre it by mass, the way MNIST was made. "
    "seed: pad the ink box to a square with 20% margins."
)
INTRO = """\
# flaxdigits: draw a digit
Draw a digit from 0 to 9 with the mouse or a finger: the MLP and the CNN, trained on MNIST and
run by onnxruntime, read it as you draw. Or upload a photo or scan of a handwritten digit.
"""

# ---------------------------------------------------------------------------------- models


def load_predictors(models_dir, *, threads: int = 1) -> dict[str, Predictor]:
    """Load MODELS_DIR/mlp.onnx and cnn.onnx, each checked against its manifest.

    Args:
        models_dir: the directory `make all` (or `flaxdigits export`) writes the models to.
        threads: onnxruntime intra-op threads per model (0: onnxruntime's default, all cores).

    Returns:
        {"mlp": Predictor, "cnn": Predictor}, in that order.

    Raises:
        FileNotFoundError: the directory or one of the models is missing.
        ModelLoadError: a model file is not a usable flaxdigits export.
    """
    directory = Path(models_dir)
    names = contract.MODEL_NAMES
    missing = [f"{name}.onnx" for name in names if not (directory / f"{name}.onnx").is_file()]
    if missing:
        where = (
            f"no models directory {directory}"
            if not directory.is_dir()
            else f"{directory} has no {' or '.join(missing)}"
        )
        raise FileNotFoundError(
            f"{where}: train and export the models first with `make all` "
            f"(or `flaxdigits export RUN_DIR --out {directory}/NAME.onnx` for mlp and cnn)"
        )
    return {name: Predictor(directory / f"{name}.onnx", threads=threads) for name in names}


def concurrency_limit(threads: int, cores: int | None = None) -> int:
    """How many predictions may run at once: the cores divided by the ORT threads each uses."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    per_request = threads if threads > 0 else cores  # 0: onnxruntime takes every core
    return max(1, cores // per_request)


# -------------------------------------------------------------------------------------- app


def build_app(
    predictors: Mapping[str, Predictor],
    *,
    concurrency: int = 1,
    temp_files: TempFiles | None = None,
) -> gr.Blocks:
    """The page: Sketchpad and upload on the left; per-model cards and the steps on the right.

    Args:
        predictors: model name -> Predictor, shown left to right.
        concurrency: predictions allowed to run at once (see concurrency_limit).
        temp_files: the served temp dir's ledger: /predict releases its upload there once read.

    Returns:
        The Blocks with its queue configured; call .launch(**launch_options(...)).
    """
    predictors = dict(predictors)
    subtitles = {name: model_subtitle(p) for name, p in predictors.items()}

    def outputs_for(source: str, value, method: str) -> list:
        empty = UPLOAD_PROMPT if source == "upload" else None
        status, cards, steps = page_outputs(
            value, method, predictors, empty_message=empty, subtitles=subtitles
        )
        return [source, status, *cards, render_steps(steps)]

    def on_draw(value, method):
        return outputs_for("draw", value, method)

    def on_stroke(source, value, method):
        if source == "upload":  # queued before the person switched to Upload: stale, drop it
            return [gr.skip()] * (3 + len(predictors))
        return outputs_for("draw", value, method)

    def on_upload(path, method):
        return outputs_for("upload", path, method)

    def on_method(source, drawing, path, method):
        return outputs_for(source, path if source == "upload" else drawing, method)

    def on_clear(method):
        return [blank_canvas(), *outputs_for("draw", None, method)]

    def predict(image: str | None, method: str) -> dict:
        """Classify an image file with both models (JSON: digit, confidence, probabilities)."""
        if image is None:
            raise gr.Error("No image: pass an image file.", print_exception=False)
        try:
            return predict_all(image, method or contract.DEFAULT_PREPROCESS_METHOD, predictors)
        except ImageInputError as e:
            reason = str(e).removeprefix(f"{image}: ")
            raise gr.Error(reason, print_exception=False) from None
        finally:
            if temp_files is not None:  # read: the upload is deleted once no request holds it
                temp_files.release(image)

    with gr.Blocks(
        title="flaxdigits: draw a digit", analytics_enabled=False, delete_cache=DELETE_CACHE
    ) as demo:
        gr.Markdown(INTRO)
        source = gr.State("draw")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=440):
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
                        # A file, not gr.Image: gr.Image decodes the upload itself and fails
                        # on a bad file with a bare "Error"; here load_image_file reads it
                        # (format allow-list, pixel cap) and says what is wrong.
                        upload = path_file(
                            file_types=UPLOAD_TYPES,
                            label="Upload an image of a digit",
                            elem_id="upload",
                        )
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
                            render_result(name, None, subtitles[name]),
                            css_template=CARD_CSS,
                            js_on_load=None,
                            elem_id=f"result-{name}",
                            min_width=220,
                        )
                        for name in predictors
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
        api_result = gr.JSON(label="result", visible=False)
        api_trigger = gr.Button(visible=False)

        page = [source, status, *cards, steps]
        common = {
            "show_progress": "hidden",
            "api_visibility": "private",
            "concurrency_id": "predict",
            "trigger_mode": "always_last",  # while drawing: at most one queued, the latest
        }
        # .input fires once per finished stroke (and on undo/redo); .change is not dispatched.
        sketch.input(on_stroke, [source, sketch, method], page, **common)
        sketch.clear(on_clear, [method], [sketch, *page], **common)
        draw_tab.select(on_draw, [sketch, method], page, **common)
        upload.change(on_upload, [upload, method], page, **common)
        upload_tab.select(on_upload, [upload, method], page, **common)
        method.change(on_method, [source, sketch, upload, method], page, **common)
        api_trigger.click(
            predict,
            [api_image, method],
            api_result,
            api_name=API_NAME,
            api_description=API_DESCRIPTION,
            concurrency_id="predict",
        )
    # api_open=False: Gradio otherwise (off Spaces) lets POST /gradio_api/api/NAME skip the queue
    # and with it the size and concurrency limits.
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=concurrency, api_open=False)
    return demo


def launch_options(
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    *,
    middleware: list[Middleware] | None = None,
) -> dict:
    """Keyword arguments for Blocks.launch: loopback by default, upload cap, nothing phoning out,
    the guard in front of every route (middleware), no static worker processes beside it."""
    return {
        "server_name": host,
        "server_port": port,
        "share": share,
        "max_file_size": MAX_FILE_BYTES,
        "enable_monitoring": False,
        "footer_links": ["api"],
        "run_history": False,
        "mcp_server": False,
        "ssr_mode": False,
        "pwa": False,
        "show_error": False,
        "inbrowser": False,
        "num_workers": 0,  # static file workers would serve uploads past the guard
        "state_session_capacity": SESSIONS,
        "app_kwargs": {"middleware": list(middleware or [])},
    }


def serve_temp_dir() -> Path:
    """A fresh temp dir for this server's uploads and outputs (GRADIO_TEMP_DIR), removed at exit.

    Gradio reads GRADIO_TEMP_DIR when components and the app are made: set before build_app.
    """
    directory = Path(tempfile.mkdtemp(prefix="flaxdigits-serve-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["GRADIO_TEMP_DIR"] = str(directory)
    return directory


def launch(
    models_dir="models",
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    threads: int = 1,
    *,
    trusted_proxies=None,
    block: bool = True,
) -> gr.Blocks:
    """Serve the drawing page (`flaxdigits serve`, `make serve`).

    Args:
        models_dir: directory holding mlp.onnx and cnn.onnx (+ manifests).
        host: interface to bind; 127.0.0.1 keeps the page on this machine.
        port: TCP port.
        share: create a public *.gradio.live link (off unless asked).
        threads: onnxruntime intra-op threads per model.
        trusted_proxies: addresses of reverse proxies whose X-Forwarded-For names the client
            (for the per-client rate limits); default $FLAXDIGITS_TRUSTED_PROXIES
            (comma-separated), else nobody's.
        block: serve until interrupted; False returns at once with the server running.

    Returns:
        The running Blocks (its .local_url, .close()).

    Raises:
        FileNotFoundError: models are missing (run `make all`).
        ModelLoadError: a model is unusable.
    """
    if trusted_proxies is None:
        trusted_proxies = os.environ.get("FLAXDIGITS_TRUSTED_PROXIES", "").split(",")
    trusted_proxies = tuple(p.strip() for p in trusted_proxies if p.strip())
    predictors = load_predictors(models_dir, threads=threads)
    temp_files = TempFiles(serve_temp_dir())
    demo = build_app(predictors, concurrency=concurrency_limit(threads), temp_files=temp_files)
    # Every image the page reads is decoded by decode.py with its own size checks; this holds
    # any other Pillow decode in the process (a component's) to the same pixel cap and formats.
    configure_pillow()
    bound_logs()
    # The guard reads X-Forwarded-For itself, from trusted_proxies only: uvicorn, which by
    # default takes it from any loopback peer, must pass the peer through untouched.
    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(trusted_proxies)
    guard = Middleware(Guard, trusted_proxies=trusted_proxies, temp_files=temp_files)
    options = launch_options(host, port, share, middleware=[guard])
    demo.launch(**options, prevent_thread_lock=not block)
    demo.guard_temp_files = temp_files
    return demo
