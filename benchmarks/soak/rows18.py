"""`--rows 18`: each row of issue 18's table once, against one served page, with the server's
memory and temp dir around it."""

from __future__ import annotations

import os
import time

from benchmarks.soak.sampling import dir_stats, peak_reset, settle, vm
from benchmarks.soak.wire import page_config, sketch_and_stroke, transport_errors

MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}


def measure_rows(served, files, answers) -> list[dict]:
    """Rows 1-6 over one HTTP client, then real drawings through gradio_client (row 7)."""
    import httpx

    sketch, _ = sketch_and_stroke(page_config(served.url))
    form = {"component_id": str(sketch), "fn_name": "accept_blobs", "type": "layer"}
    with httpx.Client(base_url=served.url, timeout=300) as http:
        rows = [
            row_huge_index(served, http, form),
            row_abandoned(served, http, form),
            row_big_field(served, http),
            row_forty_files(served, http),
            row_predict_files(served, files),
            row_html(http),
        ]
    return [*rows, row_afterwards(served, files, answers)]


def row_huge_index(served, http, form) -> dict:
    """1. a layer index of 20,000,000 in a 1 KB request"""
    rss0 = settle(served.pid)
    r = http.post(
        "/gradio_api/component_server",
        data={**form, "session_hash": "row1", "id": "row1", "index": "20000000"},
        files={"file": ("layer_0.png", os.urandom(1000), "image/png")},
    )
    return {
        "row": "1 KB blob, layer index 20,000,000",
        "status": [r.status_code],
        "rss_growth_mib": round(settle(served.pid) - rss0, 1),
    }


def row_abandoned(served, http, form) -> dict:
    """2. 300 abandoned editor values of 100 KB, fresh ids and sessions"""
    rss0 = settle(served.pid)
    codes = {}
    for i in range(300):
        r = http.post(
            "/gradio_api/component_server",
            data={**form, "session_hash": f"row2-{i}", "id": f"row2-{i}", "index": "0"},
            files={"file": ("layer_0.png", os.urandom(100_000), "image/png")},
        )
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
    return {
        "row": "300 abandoned editor values x 100 KB",
        "status": codes,
        "rss_growth_mib": round(settle(served.pid) - rss0, 1),
    }


def row_big_field(served, http) -> dict:
    """3. one upload whose only part is a 200 MB form field"""
    rss0 = settle(served.pid)
    peak_reset(served.pid)

    def field():
        yield b'--b\r\nContent-Disposition: form-data; name="field"\r\n\r\n'
        for _ in range(200):
            yield b"x" * (1 << 20)
        yield b"\r\n--b--\r\n"

    try:
        status = http.post("/gradio_api/upload", content=field(), headers=MULTIPART).status_code
    except transport_errors() as e:
        status = type(e).__name__
    return {
        "row": "upload: one 200 MB form field",
        "status": [status],
        "peak_rss_growth_mib": round(vm(served.pid, "VmHWM") - rss0, 1),
    }


def row_forty_files(served, http) -> dict:
    """4. one upload request of 40 files x 9 MB"""
    before_bytes = dir_stats(served.tmp)[0]
    part = os.urandom(9 * 1024 * 1024)
    body = (
        b"".join(
            b'--b\r\nContent-Disposition: form-data; name="files"; filename="f%d.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" % i + part + b"\r\n"
            for i in range(40)
        )
        + b"--b--\r\n"
    )
    try:
        status = http.post("/gradio_api/upload", content=body, headers=MULTIPART).status_code
    except transport_errors() as e:
        status = type(e).__name__
    del body, part
    return {
        "row": "upload: 40 files x 9 MB in one request",
        "status": [status],
        "temp_dir_growth_mb": round((dir_stats(served.tmp)[0] - before_bytes) / 1e6, 1),
    }


def listing(root) -> dict[str, int]:
    """{path: size} of every file under root."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            out[path] = os.path.getsize(path)
    return out


def row_predict_files(served, files) -> dict:
    """5. files left by 20 ordinary /predict calls"""
    from gradio_client import Client, handle_file

    before_files = listing(served.tmp)
    client = Client(served.url, verbose=False, headers={"X-Forwarded-For": "192.0.2.200"})
    for path in files[:20]:
        client.predict(image=handle_file(str(path)), api_name="/predict")
    time.sleep(8)  # the guard's grace before a released upload is deleted
    new = {p: n for p, n in listing(served.tmp).items() if p not in before_files}
    return {
        "row": "20 ordinary /predict calls",
        "new_files": len(new),
        "empty_files": sum(1 for n in new.values() if n == 0),
    }


def row_html(http) -> dict:
    """6. HTML uploaded as x.png, fetched back"""
    html = b"<html><script>alert(1)</script></html>"
    r = http.post("/gradio_api/upload", files={"files": ("x.png", html, "image/png")})
    served = http.get(f"/gradio_api/file={r.json()[0]}")
    return {
        "row": "HTML uploaded as x.png, then GET /file=",
        "content_type": served.headers.get("content-type"),
        "nosniff": served.headers.get("x-content-type-options") == "nosniff",
        "csp": "content-security-policy" in served.headers,
    }


def row_afterwards(served, files, answers) -> dict:
    """7. afterwards: real drawings through gradio_client, compared with the offline predictor"""
    from gradio_client import Client, handle_file

    client = Client(served.url, verbose=False, headers={"X-Forwarded-For": "192.0.2.201"})
    right = 0
    for path in files[:5]:
        result = client.predict(image=handle_file(str(path)), api_name="/predict")
        want = answers[str(path)]
        right += all(result["models"][n]["digit"] == p.digit for n, p in want.items())
    return {"row": "afterwards: 5 real drawings through gradio_client", "correct": right}
