"""The page the soak measures, in a process of its own: `launch` of the first flaxdigits on
sys.path, with 127.0.0.1 as its trusted proxy.

    python -P benchmarks/soak/server.py MODELS PORT --expect-under DIR [--ctrl-c]

benchmarks/soak/serving.py runs it by path with -P (its own folder not on sys.path) from a
working directory outside the checkouts: the flaxdigits it serves is this checkout's (the venv's
install) or, with PYTHONPATH=TREE, an older checkout laid out as installed (--before).
--expect-under: the served page's module must lie under DIR, or the server exits at once.
--ctrl-c: SIGINT interrupts, as Ctrl-C in a terminal, even when this process was started with it
ignored (a background job of a shell script).

Only the standard library and flaxdigits (and what it imports) here: an older checkout is served
by this same file.
"""

from __future__ import annotations

import argparse
import inspect
import signal
import sys
from pathlib import Path


def page_launch():
    """flaxdigits' `launch`: serve/page/app.py, or serve/app.py in a checkout from before it."""
    try:
        from flaxdigits.serve.page.app import launch
    except ModuleNotFoundError as e:
        if e.name not in ("flaxdigits.serve.page", "flaxdigits.serve.page.app"):
            raise
        from flaxdigits.serve.app import launch
    return launch


def serve(args) -> None:
    """Launch the page (trusted proxy 127.0.0.1 where the checkout has the option) and block."""
    launch = page_launch()
    where = Path(inspect.getfile(launch)).resolve()
    if not where.is_relative_to(Path(args.expect_under).resolve()):
        sys.exit(f"soak server: serving {where}, not a file under {args.expect_under}")
    options = {"models_dir": args.models, "port": args.port, "block": False}
    if "trusted_proxies" in inspect.signature(launch).parameters:  # from the guard on (issue 18)
        options["trusted_proxies"] = ("127.0.0.1",)
    demo = launch(**options)
    print(f"soak server: serving {where} on port {args.port}", flush=True)  # serving.READY
    demo.block_thread()


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models")
    ap.add_argument("port", type=int)
    ap.add_argument("--expect-under", required=True)
    ap.add_argument("--ctrl-c", action="store_true")
    return ap.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if arguments.ctrl_c:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    serve(arguments)
