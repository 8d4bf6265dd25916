"""The drawing page: draw or upload a digit and watch the MLP and the CNN read it side by side.

Gradio Blocks over the JAX-free serving core (preprocess + Predictor): numpy, Pillow, onnxruntime
and gradio only. What the page and the API show lives in serve/page/views.py as pure functions that
tests call directly (predict_all, page_outputs, render_result); build_app wires them to
components and launch serves the page on 127.0.0.1 by default, with a public share link only when
asked.

One named API endpoint, for gradio_client:

    /predict(image: image file, method: "mnist" | "box" = "mnist") -> JSON
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
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from flaxdigits.serve.page.budgets import PENDING_SESSIONS, SESSIONS
from flaxdigits.serve.page.guard import Guard
from flaxdigits.serve.page.handlers import Handlers, load_predictors
from flaxdigits.serve.page.layout import layout, wire
from flaxdigits.serve.page.logs import BoundedStream, bound_logs
from flaxdigits.serve.page.temp_files import TempFiles
from flaxdigits.serve.runtime.decode import (
    MAX_FILE_BYTES,
    configure_pillow,
)
from flaxdigits.serve.runtime.predictor import Predictor

QUEUE_MAX_SIZE = 64  # waiting events: 50+ API clients at once; beyond it a clean "queue full"
DELETE_CACHE = (900, 1800)  # every 15 min, delete uploads and outputs older than 30 min
# How often Gradio's leftovers are pruned: finished uploads from its upload-progress table, the
# event ids of sessions whose messages it no longer keeps.
PROGRESS_FORGET_S = 60.0


def concurrency_limit(threads: int, cores: int | None = None) -> int:
    """How many predictions may run at once: the cores divided by the ORT threads each uses."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, cores or 1)
    per_request = threads if threads > 0 else cores  # 0: onnxruntime takes every core
    return max(1, cores // per_request)


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


_PROCESS_ROOT: list[Path] = []  # the one temp root of this process's pages, once made


def serve_temp_dir() -> Path:
    """A fresh temp dir for this server's uploads and outputs (GRADIO_TEMP_DIR while it is made
    and launched), removed when the server stops (served_lifespan); it lies in a root of this
    process's own, removed at exit.

    Gradio reads GRADIO_TEMP_DIR when components and the app are made (where it writes: this
    page's dir) and again at every request (whether an upload lies inside it): after the launch,
    upload_root() points it at the root, so that a second page made in the same process does not
    make the first one's uploads look foreign ("not uploaded by a user").
    """
    if not _PROCESS_ROOT:
        root = Path(tempfile.mkdtemp(prefix="flaxdigits-serve-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _PROCESS_ROOT.append(root)
    directory = Path(tempfile.mkdtemp(prefix="page-", dir=_PROCESS_ROOT[0]))
    os.environ["GRADIO_TEMP_DIR"] = str(directory)
    return directory


def upload_root() -> None:
    """After a launch: Gradio's upload checks accept every page's dir of this process."""
    os.environ["GRADIO_TEMP_DIR"] = str(_PROCESS_ROOT[0])


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
        progress = asyncio.create_task(forget_leftovers(app))
        try:
            yield
        finally:
            progress.cancel()
            temp_files.close()
            if isinstance(sys.stderr, BoundedStream) and sys.stderr.stream is stderr:
                sys.stderr = stderr

    return lifespan


async def forget_leftovers(app) -> None:
    """Keep two of Gradio's tables short, every PROGRESS_FORGET_S:

    - its upload-progress table: an entry (~1.9 KB) per upload id a page sends, dropped only when
      a progress stream reads it to the end, so ids nobody streams stay for good; what was
      finished at the last pass is dropped (forget_finished);
    - its event ids per session: an entry per session that ever joined, streamed or not, dropped
      only when the stream is cut; those of sessions whose messages the queue no longer keeps
      (PENDING_SESSIONS) go (forget_event_ids).
    """
    from gradio import routes

    finished: set[str] = set()
    while True:
        await asyncio.sleep(PROGRESS_FORGET_S)
        finished = forget_finished(routes.file_upload_statuses, finished)
        queue = getattr(getattr(app, "blocks", None), "_queue", None)
        if queue is not None:
            forget_event_ids(queue)


def forget_finished(progress, finished_before: set[str]) -> set[str]:
    """Drop the uploads finished (or only waited on) at the last pass; return those finished now."""
    statuses = getattr(progress, "_statuses", {})
    signals = getattr(progress, "_signals", {})
    finished = {k for k, v in statuses.items() if v.is_done} | (set(signals) - set(statuses))
    for key in finished & finished_before:
        statuses.pop(key, None)
        signals.pop(key, None)
    return finished - finished_before


def forget_event_ids(queue) -> int:
    """Drop the event ids Gradio keeps for sessions whose messages it no longer holds (dropped
    from its PENDING_SESSIONS, or their stream cut) and that have no event queued or running:
    nothing reads them (a stream for a session the queue no longer holds ends at once, "session
    not found"). Gradio removes an
    entry only when a stream is cut, never when it ends well (an empty set stays) or when the
    session is dropped unstreamed: ~250-400 bytes for every session ever. On the event loop (where
    Gradio's queue changes them); returns how many went."""
    sessions = queue.pending_messages_per_session
    live = {event.session_hash for event in list(queue.event_ids_to_events.values())}
    stale = [s for s in queue.pending_event_ids_session if s not in sessions and s not in live]
    for session in stale:
        queue.pending_event_ids_session.pop(session, None)
    return len(stale)


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
    upload_root()
    demo.guard_temp_files = temp_files
    if block:
        demo.block_thread()
    return demo
