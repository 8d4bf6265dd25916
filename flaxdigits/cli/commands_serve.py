"""Subcommands that run the exported models: predict, serve (the drawing page), web (the static
browser demo).

For each subcommand, `NAME_arguments(parser)` declares its arguments and `run_NAME(args)` calls
the one library function that does the work; `flaxdigits.cli.commands` pairs them in its table.
onnxruntime and gradio are imported inside the handlers, so `flaxdigits predict` on a board
without JAX or gradio imports neither.
"""

from __future__ import annotations

import argparse
import os
import sys

from flaxdigits.cli.names import renamed
from flaxdigits.core.contract import DEFAULT_PREPROCESS_METHOD, PREPROCESS_METHODS, RENAMED_METHODS
from flaxdigits.serve.page import allocator

# After Ctrl-C the page's process ends within this many seconds, even when a thread that Gradio or
# a request left behind would hold interpreter shutdown open.
SHUTDOWN_S = 10.0


def add_models_or_release(p: argparse.ArgumentParser) -> None:
    """--models: the exported models, as a directory or a release (serve and web)."""
    p.add_argument(
        "--models",
        default="models",
        help="directory with mlp.onnx and cnn.onnx, or a release (.tar.gz or folder)",
    )


def predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="an exported .onnx file, or a release (.tar.gz or folder)"
    )
    p.add_argument(
        "--release-file",
        help="with a release: which model (cnn.onnx, mlp.onnx, cnn.int8.onnx, mlp.int8.onnx; "
        "default: cnn.onnx, or cnn.int8.onnx in a release of the int8 files only)",
    )
    p.add_argument(
        "--preprocess",
        default=DEFAULT_PREPROCESS_METHOD,
        choices=PREPROCESS_METHODS,
        type=renamed(RENAMED_METHODS, "--preprocess"),
        help="mnist: fit the ink into 20x20 and centre it by mass, as MNIST was made; box: pad "
        "the ink box to a square (default: mnist)",
    )
    p.add_argument("--json", action="store_true", help="one JSON line per file")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    p.add_argument(
        "files",
        nargs="+",
        metavar="PATH",
        help="image files, folders (recursive, image files only), glob patterns, "
        "or - to read paths from stdin",
    )


def run_predict(args: argparse.Namespace) -> int:
    from flaxdigits.serve.predict import predict_files
    from flaxdigits.serve.runtime.decode import configure_pillow

    configure_pillow()  # pixel cap and decoder allow-list for this process
    return predict_files(
        args.model,
        args.files,
        method=args.preprocess,
        as_json=args.json,
        threads=args.threads,
        release_file=args.release_file,
    )


def serve_epilog() -> str:
    """serve --help's closing text: every route's budgets (stdlib + Pillow: no gradio)."""
    from flaxdigits.serve.page.budgets import describe_budgets

    return f"every route's budgets (serve/page/budgets.py):\n{describe_budgets()}"


def serve_arguments(p: argparse.ArgumentParser) -> None:
    add_models_or_release(p)
    p.add_argument("--host", help="default: $GRADIO_SERVER_NAME, else 127.0.0.1")
    p.add_argument("--port", type=int, help="default: $GRADIO_SERVER_PORT, else 7860")
    p.add_argument("--share", action="store_true", help="public Gradio share link (off)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model")
    p.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDRESS",
        help="a reverse proxy whose X-Forwarded-For names the client, for the per-client rate "
        "limits (repeatable; default $FLAXDIGITS_TRUSTED_PROXIES, else none)",
    )
    p.add_argument(
        "--allocator",
        choices=allocator.CHOICES,
        help="the process's malloc: auto (jemalloc where the system has libjemalloc.so.2), "
        "jemalloc (refuse to start without it) or system (default: $FLAXDIGITS_ALLOCATOR, "
        "else auto)",
    )


def run_serve(args: argparse.Namespace) -> int:
    from flaxdigits.release import reader as release
    from flaxdigits.serve.page import hosting

    # First, before gradio and onnxruntime load: this may re-exec the process on jemalloc.
    print(allocator.use_jemalloc(args.allocator), file=sys.stderr)
    try:
        from flaxdigits.serve.page.app import launch
    except ImportError as e:  # the edge install: no gradio
        raise RuntimeError(f"the page needs {e.name}: pip install 'flaxdigits[serve]'") from None

    host, port, warning = hosting.bind(args.host, args.port)
    if warning:
        print(warning, file=sys.stderr)
    # A release is verified, its models loaded from a private copy, and the copy removed before
    # the page serves (the predictors hold what they read).
    with release.models_dir(args.models) as models:
        demo = launch(
            models_dir=models,
            host=host,
            port=port,
            share=args.share,
            threads=args.threads,
            block=False,
            # absent: launch reads $FLAXDIGITS_TRUSTED_PROXIES
            **({"trusted_proxies": args.trusted_proxy} if args.trusted_proxy else {}),
        )
    demo.block_thread()  # until Ctrl-C, as Blocks.launch blocks; it closes the server
    exit_within(SHUTDOWN_S)
    return 0


def exit_within(seconds: float) -> None:
    """A daemon timer that ends the process if interpreter shutdown still runs after seconds.

    It acts only once the main thread has stopped (Python is joining the other threads at exit);
    a caller that goes on running (a test calling main()) is left alone. Before exiting it prints
    every thread's stack, so a hang says where it was.
    """
    import faulthandler
    import threading

    def give_up() -> None:
        if threading.main_thread().is_alive():
            return
        print(f"shutdown took over {seconds:.0f} s; the threads holding it:", file=sys.stderr)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(130)

    timer = threading.Timer(seconds, give_up)
    timer.daemon = True
    timer.start()


def web_arguments(p: argparse.ArgumentParser) -> None:
    add_models_or_release(p)
    p.add_argument("--out", required=True, help="the site's directory (e.g. build/web)")
    p.add_argument("--int8", action="store_true", help="ship the int8 models")


def run_web(args: argparse.Namespace) -> int:
    from flaxdigits.export.site import build_site
    from flaxdigits.release import reader as release

    with release.models_dir(args.models) as models:  # a release: verified before it is read
        written = build_site(models, args.out, int8=args.int8)
    print(f"{args.out}: {len(written)} files, {sum(written.values()):,} bytes (static site)")
    return 0
