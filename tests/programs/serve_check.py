"""CI: start the page as a user does (`make serve`), send it one drawing, stop it with Ctrl-C.

    .venv/bin/python -m tests.programs.serve_check build/smoke/models   # make serve MODELS=...
    .venv/bin/python -m tests.programs.serve_check --demo               # make demo, literally

The page's answer must be the one `flaxdigits predict` gives for the same drawing and model
files; the server must stop on SIGINT within STOP_S and leave nothing listening.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

from tests.support.ports import PortTaken, on_free_port, says_port_taken

START_S = 180  # imports, model checks, Gradio start-up on a busy 2-core machine
DEMO_START_S = 600  # make demo also builds .venv-serve (pip) the first time
STOP_S = 30


def drawing(path: Path) -> Path:
    """A black '7' on white, as a person draws it on the page."""
    img = Image.new("RGB", (400, 400), "white")
    ImageDraw.Draw(img).line([(120, 90), (280, 90), (170, 320)], fill="black", width=24)
    img.save(path)
    return path


def _ctrl_c_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until_up(url: str, server: subprocess.Popen, log, start_s: float = START_S) -> None:
    """Poll the page until it answers 200; fail if the server exits or START_S passes (PortTaken
    when it exited because another process took its port first)."""
    deadline = time.monotonic() + start_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            out = server_log(log)
            if says_port_taken(out):
                raise PortTaken(int(url.rsplit(":", 1)[1].strip("/")), out)
            print(out)
            sys.exit(f"serve-check: `make serve` exited with {server.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback URL
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    sys.exit(f"serve-check: no answer from {url} within {start_s:.0f} s")


def server_log(log) -> str:
    """What the server printed so far."""
    log.seek(0)
    return log.read().decode(errors="replace")


def start(make: list[str], port: int, log, start_s: float) -> subprocess.Popen:
    """`make ...` serving the page on port, as a user starts it; returns once the page answers."""
    # PYTHONFAULTHANDLER: a server that ignores Ctrl-C is sent SIGABRT and prints every thread.
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "PYTHONFAULTHANDLER": "1"}
    log.seek(0)
    log.truncate()
    server = subprocess.Popen(  # noqa: S603 - the quickstart's command, `make` from PATH as a user
        ["make", "--no-print-directory", *make],  # noqa: S607
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: Ctrl-C reaches make and the server
        # As in a terminal: Ctrl-C interrupts. A CI runner that starts this script in the
        # background hands it SIGINT ignored, and make and Python would keep it so.
        preexec_fn=_ctrl_c_interrupts,
    )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/", server, log, start_s)
    except PortTaken:
        server.wait(timeout=STOP_S)
        raise
    return server


def main(argv: list[str]) -> int:
    """`make serve MODELS=argv[0]`, or `make demo` with --demo, checked as a user would."""
    with tempfile.TemporaryFile() as log:
        try:
            if argv[:1] == ["--demo"]:
                (release,) = sorted(Path("demo").glob("flaxdigits-models-*.tar.gz"))
                files = {n: ["--model", str(release), "--release-file", f"{n}.int8.onnx"]
                         for n in ("mlp", "cnn")}  # fmt: skip
                return check(["demo"], files, log, DEMO_START_S)
            models = argv[0] if argv else "models"
            files = {n: ["--model", f"{models}/{n}.onnx"] for n in ("mlp", "cnn")}
            return check(["serve", f"MODELS={models}"], files, log, START_S)
        finally:
            print(server_log(log)[-4000:], end="")


def check(make: list[str], models: dict[str, list[str]], log, start_s: float) -> int:
    """Start the page, compare its answer with the CLI's on models, stop it with Ctrl-C."""
    from gradio_client import Client, handle_file

    started = time.monotonic()
    port, server = on_free_port(lambda port: start(make, port, log, start_s))
    url = f"http://127.0.0.1:{port}/"
    try:
        up_s = time.monotonic() - started
        with tempfile.TemporaryDirectory(prefix="flaxdigits-ci-") as tmp:
            png = drawing(Path(tmp) / "seven.png")
            offline = {}
            for name in ("mlp", "cnn"):
                out = subprocess.run(  # noqa: S603 - the CLI on a file we wrote
                    [sys.executable, "-m", "flaxdigits", "predict", "--json", *models[name]]
                    + [str(png)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                offline[name] = json.loads(out.stdout)["digit"]
            result = Client(url, verbose=False).predict(
                image=handle_file(str(png)), method="mnist", api_name="/predict"
            )
        answers = {name: model["digit"] for name, model in result["models"].items()}
        print(f"serve-check: up in {up_s:.1f} s; page {answers}, predict CLI {offline}")
        if answers != offline:
            sys.exit("serve-check: the page and `flaxdigits predict` disagree")
        for name, model in result["models"].items():
            if abs(sum(model["probabilities"]) - 1) > 1e-3:
                sys.exit(f"serve-check: {name}'s probabilities do not sum to 1")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # Ctrl-C in the terminal that ran `make serve`
    try:
        code = server.wait(timeout=STOP_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGABRT)  # the stacks of where it hangs, in the CI log
        time.sleep(3)
        os.killpg(server.pid, signal.SIGKILL)
        sys.exit(f"serve-check: the server ignored Ctrl-C for {STOP_S} s")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            sys.exit(f"serve-check: something still listens on port {port}")
    print(f"serve-check: stopped on Ctrl-C (make exited {code}); port {port} closed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
