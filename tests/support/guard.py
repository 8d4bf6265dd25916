"""Helpers for the guard's tests against a served page: the page launched on a free port, raw
requests, multipart bodies and the editor's blobs and queue joins over plain HTTP."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from benchmarks.soak.wire import raw_request
from flaxdigits.serve.page import app, budgets
from tests.programs import command
from tests.support.ports import free_port, on_free_port


@contextlib.contextmanager
def served_page(models_dir, rates=None):
    """The page launched in this process on a free loopback port, 127.0.0.1 its trusted proxy (a
    test names its client with X-Forwarded-For); rates: {route class: budgets.Rate} to lower."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app, "configure_pillow", lambda: None)  # process-wide: not in the session
        for name in ("GRADIO_TEMP_DIR", "FORWARDED_ALLOW_IPS"):  # launch sets them: restore
            mp.setenv(name, os.environ.get(name, ""))
        for kind, rate in (rates or {}).items():
            mp.setitem(budgets.RATES, kind, rate)
        _, demo = on_free_port(
            lambda port: app.launch(
                models_dir=models_dir, port=port, trusted_proxies=("127.0.0.1",), block=False
            )
        )
        try:
            yield demo
        finally:
            demo.close()


def port_of(demo) -> int:
    return int(demo.local_url.rstrip("/").rsplit(":", 1)[1])


def raw(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send bytes on a fresh connection; the answer's first bytes (b"" if it closed unanswered)."""
    return raw_request(port, data, timeout, size=65536)


def status_of(reply: bytes) -> int | None:
    try:
        return int(reply.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def multipart(parts, boundary: str = "b") -> bytes:
    """A multipart/form-data body of (field name, file name, bytes) parts."""
    out = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for field, filename, data in parts
    ]
    return b"".join(out) + f"--{boundary}--\r\n".encode()


def png(img) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def file_data(path: str) -> dict:
    """A file path as the page's components send it in a queue join."""
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def component_id(demo, elem_id: str) -> int:
    return next(b._id for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def fn_index(demo, name: str) -> int:
    return next(i for i, fn in demo.fns.items() if fn.name == name)


def post_blob(http, demo, value_id: str, kind: str, blob: bytes, index: int = 0):
    """One blob of an editor value, as the browser posts it to component_server."""
    form = {
        "component_id": str(component_id(demo, "sketch")),
        "session_hash": "s" * 11,
        "fn_name": "accept_blobs",
        "id": value_id,
        "type": kind,
        **({"index": str(index)} if kind == "layer" else {}),
    }
    return http.post(
        "/gradio_api/component_server", data=form, files={"file": (f"{kind}.png", blob)}
    )


def stroke(http, demo, value, timeout: float = 120.0) -> dict:
    """Queue the canvas's stroke event with this editor value; its completed message's output
    ({"data": [...]} or {"error": ...}) and how long it took ("seconds")."""
    session = f"t{time.monotonic_ns():x}"
    body = {
        "data": ["draw", value, "mnist"],
        "fn_index": fn_index(demo, "on_stroke"),
        "session_hash": session,
        "event_data": None,
        "trigger_id": component_id(demo, "sketch"),
    }
    t = time.monotonic()
    joined = http.post(
        "/gradio_api/queue/join",
        content=json.dumps(body, separators=(",", ":")),
        headers={"Content-Type": "application/json"},
    )
    assert joined.status_code == 200, joined.text
    url = f"/gradio_api/queue/data?session_hash={session}"
    with http.stream("GET", url, timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return {**(message.get("output") or {}), "seconds": time.monotonic() - t}
    raise AssertionError("the stroke event never completed")


def client(demo, address: str, timeout: float = 60.0) -> httpx.Client:
    """An HTTP client of the served page that the guard knows as `address`."""
    return httpx.Client(
        base_url=demo.local_url, headers={"X-Forwarded-For": address}, timeout=timeout
    )


def wait_for(condition, seconds: float = 20.0) -> bool:
    """Poll condition every 0.2 s for up to seconds; its last value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@contextlib.contextmanager
def page_process(models_dir, tmp_path, log=None, env=None):
    """`flaxdigits serve` in its own process, its temp dir under tmp_path; yields (proc, port).

    SIGINT acts as a terminal's Ctrl-C, even where this test runs with it ignored; env: more
    environment variables for it."""
    port = free_port()
    serve = [str(Path(sys.executable).parent / "flaxdigits"), "serve"]
    proc = subprocess.Popen(  # noqa: S603 - our own entry point
        command("sigint_default", *serve, "--models", models_dir, "--port", port),
        env={**os.environ, "TMPDIR": str(tmp_path), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb") if log else subprocess.DEVNULL,  # noqa: SIM115 - the child's
    )
    try:
        assert wait_for(lambda: answers(port), 120), "the page did not start"
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def answers(port: int) -> bool:
    """Whether a page on this loopback port answers its root."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):  # noqa: S310
            return True
    except OSError:
        return False
