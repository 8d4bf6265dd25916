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

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from flaxdigits.core import contract
from flaxdigits.serve.page.budgets import PENDING_SESSIONS, SESSIONS, describe_budgets
from flaxdigits.serve.page.components import bounded_sketchpad, path_file
from flaxdigits.serve.page.guard import BoundedStream, Guard, bound_logs
from flaxdigits.serve.page.temp_files import UPLOAD_KEEP_S, TempFiles
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
PROGRESS_FORGET_S = 60.0  # how often finished uploads leave Gradio's upload-progress table
UPLOAD_GONE = (
    f"This upload is no longer on the server (kept {UPLOAD_KEEP_S / 60:g} minutes after it was "
    "last read): upload the image again."
)

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


# --------------------------------------------------------------------------------- handlers


class Handlers:
    """The page's event handlers and the /predict endpoint: plain functions of their inputs
    (tests call them directly). Each releases the uploads it read (temp_files)."""

    def __init__(self, predictors: Mapping[str, Predictor], temp_files: TempFiles | None = None):
        self.predictors = dict(predictors)
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
            return predict_all(image, method or contract.DEFAULT_PREPROCESS_METHOD, self.predictors)
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


# -------------------------------------------------------------------------------------- app


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
    api_result: gr.JSON
    api_trigger: gr.Button

    @property
    def outputs(self) -> list:
        return [self.source, self.status, *self.cards, self.steps]


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
        temp_files: the served temp dir's ledger: handlers release the uploads they read there.

    Returns:
        The Blocks with its queue configured; call .launch(**launch_options(...)).
    """
    handlers = Handlers(predictors, temp_files)
    with gr.Blocks(
        title="flaxdigits: draw a digit", analytics_enabled=False, delete_cache=DELETE_CACHE
    ) as demo:
        page = layout(handlers)
        wire(page, handlers)
    # api_open=False: Gradio otherwise (off Spaces) lets POST /gradio_api/api/NAME skip the queue
    # and with it the size and concurrency limits.
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=concurrency, api_open=False)
    demo._queue.pending_messages_per_session.max_size = PENDING_SESSIONS
    return demo


def layout(handlers: Handlers) -> Page:
    """The page's components, inside the current Blocks."""
    gr.Markdown(INTRO)
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
    api_result = gr.JSON(label="result", visible=False)
    api_trigger = gr.Button(visible=False)
    return Page(
        source, sketch, upload, method, draw_tab, upload_tab, status, cards, steps,
        api_image, api_result, api_trigger,
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
        [page.api_image, page.method],
        page.api_result,
        api_name=API_NAME,
        api_description=API_DESCRIPTION,
        concurrency_id="predict",
    )


def launch_options(
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    *,
    middleware: list[Middleware] | None = None,
    lifespan=None,
) -> dict:
    """Keyword arguments for Blocks.launch: loopback by default, upload cap, nothing phoning out,
    the guard in front of every route (middleware, and a lifespan that keeps it in front of
    Gradio's own middleware), no static worker processes beside it."""
    app_kwargs = {"middleware": list(middleware or [])}
    if lifespan is not None:
        app_kwargs["lifespan"] = lifespan
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
        "app_kwargs": app_kwargs,
    }


def serve_temp_dir() -> Path:
    """A fresh temp dir for this server's uploads and outputs (GRADIO_TEMP_DIR), removed when the
    server stops (served_lifespan) and, failing that, at exit.

    Gradio reads GRADIO_TEMP_DIR when components and the app are made: set before build_app.
    """
    directory = Path(tempfile.mkdtemp(prefix="flaxdigits-serve-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    os.environ["GRADIO_TEMP_DIR"] = str(directory)
    return directory


def served_lifespan(temp_files: TempFiles):
    """The app's lifespan: at startup (before the server listens) the guard goes in front of
    Gradio's CORS middleware, the log caps on the handlers uvicorn has just made and on stderr,
    and the temp dir's sweep starts; when the server stops (Ctrl-C, SIGTERM, close()) the temp
    dir goes and stderr is given back."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        guard_before_cors(app)
        bound_logs()
        stderr, sys.stderr = sys.stderr, BoundedStream(sys.stderr)
        temp_files.start()
        progress = asyncio.create_task(forget_upload_progress())
        try:
            yield
        finally:
            progress.cancel()
            temp_files.close()
            if isinstance(sys.stderr, BoundedStream) and sys.stderr.stream is stderr:
                sys.stderr = stderr

    return lifespan


async def forget_upload_progress() -> None:
    """Keep Gradio's upload-progress table short: it adds an entry (~1.9 KB) per upload id a page
    sends and drops it only when a progress stream reads it to the end, so ids nobody streams
    stay for good. Every PROGRESS_FORGET_S, what was finished at the last pass is dropped."""
    from gradio import routes

    finished: set[str] = set()
    while True:
        await asyncio.sleep(PROGRESS_FORGET_S)
        finished = forget_finished(routes.file_upload_statuses, finished)


def forget_finished(progress, finished_before: set[str]) -> set[str]:
    """Drop the uploads finished (or only waited on) at the last pass; return those finished now."""
    statuses = getattr(progress, "_statuses", {})
    signals = getattr(progress, "_signals", {})
    finished = {k for k, v in statuses.items() if v.is_done} | (set(signals) - set(statuses))
    for key in finished & finished_before:
        statuses.pop(key, None)
        signals.pop(key, None)
    return finished - finished_before


def guard_before_cors(app) -> None:
    """Move the guard in front of Gradio's CORS middleware, which answers pre-flight (OPTIONS)
    requests itself; compression stays outside the guard, which reads an upload's answer."""
    stack = [m for m in app.user_middleware if m.cls is not Guard]
    guard = [m for m in app.user_middleware if m.cls is Guard]
    cors = [i for i, m in enumerate(stack) if m.cls.__name__ == "CustomCORSMiddleware"]
    if not guard or not cors:
        return
    app.user_middleware = stack[: cors[0]] + guard + stack[cors[0] :]
    app.middleware_stack = app.build_middleware_stack()


def stop_on_sigterm() -> None:
    """SIGTERM stops the server as Ctrl-C does (Gradio's block_thread closes it, the lifespan
    removes the temp dir); set from the main thread only, where SIGTERM has no handler yet."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


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
        block: serve until interrupted (Ctrl-C or SIGTERM); False returns at once with the
            server running (then demo.block_thread() waits as block=True does).

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
    temp_files.forget = demo.upload_file_set.discard  # Gradio's own list of uploads, kept short
    # Every image the page reads is decoded by decode.py with its own size checks; this holds
    # any other Pillow decode in the process (a component's) to the same pixel cap and formats.
    configure_pillow()
    # The guard reads X-Forwarded-For itself, from trusted_proxies only: uvicorn, which by
    # default takes it from any loopback peer, must pass the peer through untouched.
    os.environ["FORWARDED_ALLOW_IPS"] = ",".join(trusted_proxies)
    guard = Middleware(Guard, trusted_proxies=trusted_proxies, temp_files=temp_files)
    lifespan = served_lifespan(temp_files)
    options = launch_options(host, port, share, middleware=[guard], lifespan=lifespan)
    stop_on_sigterm()
    demo.launch(**options, prevent_thread_lock=True)
    demo.guard_temp_files = temp_files
    if block:
        demo.block_thread()
    return demo
