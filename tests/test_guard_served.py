"""The issue-18 hostile requests, short, against the page served on loopback (toy models).

Each row of the issue's table: a huge layer index, abandoned editor sessions, a big form field,
40 files of 9 MB in one request, files left per prediction, HTML uploaded as .png; then the page
still answers. `make soak` (benchmarks/soak/) runs them by the thousand and measures memory.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
import urllib.request

import httpx
import pytest

from flaxdigits.serve.page import app, budgets, components
from tests.support.drawings import drawing
from tests.support.ports import free_port

UPLOAD_RATE = budgets.Rate(burst=30, per_second=2.0)
CLIENTS = iter(f"198.51.100.{i}" for i in range(1, 250))  # one X-Forwarded-For per test


@pytest.fixture(scope="module")
def served(toy_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app, "configure_pillow", lambda: None)  # process-wide: not in the session
        for name in ("GRADIO_TEMP_DIR", "FORWARDED_ALLOW_IPS"):  # launch sets them: restore
            mp.setenv(name, os.environ.get(name, ""))
        mp.setitem(budgets.RATES, budgets.UPLOAD, UPLOAD_RATE)  # a flood a test can send quickly
        demo = app.launch(
            models_dir=toy_dir, port=free_port(), trusted_proxies=("127.0.0.1",), block=False
        )
        demo.guard_temp_files.grace_s = 0.2
        try:
            yield demo
        finally:
            demo.close()


@pytest.fixture
def http(served):
    headers = {"X-Forwarded-For": next(CLIENTS)}
    with httpx.Client(base_url=served.local_url, headers=headers, timeout=60) as client:
        yield client


def sketch_of(demo):
    return next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sketch")


def post_blob(http, demo, *, index=0, value_id="v1", kind="layer", size=1000):
    sketch = sketch_of(demo)
    form = {
        "component_id": str(sketch._id),
        "session_hash": "s" * 11,
        "fn_name": "accept_blobs",
        "id": value_id,
        "type": kind,
        "index": str(index),
    }
    files = {"file": ("layer_0.png", os.urandom(size), "image/png")}
    return http.post("/gradio_api/component_server", data=form, files=files)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    drawing().save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_huge_layer_index_is_refused_and_stores_nothing(served, http):
    store = sketch_of(served).store
    before = len(store)
    response = post_blob(http, served, index=20_000_000)
    assert response.status_code == 400 and "out of range" in response.text
    assert len(store) == before
    assert post_blob(http, served, index=0).status_code == 200


def test_abandoned_editor_sessions_stay_within_the_store_budget(served, http):
    store = sketch_of(served).store
    for i in range(120):
        assert post_blob(http, served, value_id=f"abandoned{i}", size=100_000).status_code == 200
    client = http.headers["X-Forwarded-For"]
    mine = [e for e in store._entries.values() if e.owner == client]
    assert sum(e.nbytes for e in mine) <= components.CLIENT_BYTES  # one client: its own budget
    assert 1 <= len(mine) <= components.CLIENT_BYTES // 100_000


def test_a_big_form_field_is_cut_at_the_upload_budget(served, http):
    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="field"\r\n\r\n'
        for _ in range(16):  # 16 MB: past the 10 MB budget, streamed without a length
            yield b"x" * (1 << 20)
        yield b"\r\n--b--\r\n"

    try:
        response = http.post(
            "/gradio_api/upload",
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
    except httpx.TransportError:  # the server may close before the client finished sending
        return
    assert response.status_code == 413


def test_forty_files_of_nine_mb_in_one_request_are_refused_before_reading(served):
    port = int(served.local_url.rstrip("/").rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {40 * 9 * 1024 * 1024 + 40 * 200}\r\n\r\n".encode()
            + b"--b\r\n"
        )
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    on_disk = sum(p.stat().st_size for p in served.guard_temp_files.root.rglob("*") if p.is_file())
    assert on_disk < 1024 * 1024


def test_predictions_leave_no_files_behind(served):
    from gradio_client import Client, handle_file

    temp = served.guard_temp_files
    before = {p for p in temp.root.rglob("*") if p.is_file()}
    path = temp.root.parent / f"digit-{os.getpid()}.png"
    path.write_bytes(png_bytes())
    try:
        client = Client(served.local_url, verbose=False, headers={"X-Forwarded-For": "192.0.2.7"})
        for _ in range(3):
            result = client.predict(image=handle_file(str(path)), api_name="/predict")
            assert result["models"]["mlp"]["digit"] == 3  # the toy model: 3 for any ink
    finally:
        path.unlink()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = {p for p in temp.root.rglob("*") if p.is_file()} - before
        if not left:
            break
        time.sleep(0.2)
    assert not left, left  # neither the uploads nor Gradio's empty temp files


def test_uploaded_html_is_never_served_as_html(served, http):
    html = b"<html><script>alert(1)</script></html>"
    for name, expected_type in (("x.png", "image/png"), ("x.html", "application/octet-stream")):
        response = http.post("/gradio_api/upload", files={"files": (name, html, "image/png")})
        assert response.status_code == 200
        (path,) = response.json()
        served_file = http.get(f"/gradio_api/file={path}")
        assert served_file.headers["x-content-type-options"] == "nosniff"
        assert served_file.headers["content-type"] == expected_type
        if expected_type != "image/png":
            assert served_file.headers["content-disposition"] == "attachment"


def test_a_flood_of_uploads_from_one_client_gets_429(served, http):
    codes = [http.post("/gradio_api/upload", content=b"").status_code for _ in range(60)]
    assert codes.count(400) >= UPLOAD_RATE.burst  # not multipart: Gradio's own refusal
    assert codes.count(429) >= 10
    other = {"X-Forwarded-For": "203.0.113.99"}  # another client is still served
    assert http.post("/gradio_api/upload", content=b"", headers=other).status_code == 400


def test_the_page_carries_the_headers_and_lists_its_budgets(served):
    with urllib.request.urlopen(served.local_url, timeout=30) as response:
        headers = response.headers
        page = response.read().decode()
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "object-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    config = json.loads(urllib.request.urlopen(served.local_url + "config", timeout=30).read())
    assert f"{budgets.UPLOAD_BODY_BYTES:,}" in json.dumps(config)
    assert page
