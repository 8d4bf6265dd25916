"""`--rows 34`: each of issue 34's eight findings once, each against a freshly started page (its
own temp dir and log: a finding that fills the disk for good must not decide the next row), then
the server stopped by SIGINT and SIGTERM. Rows 7 and 8 here; the others by topic beside."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from benchmarks.soak.rows34_disk import row_empty_parts, row_leases, row_te_and_cl
from benchmarks.soak.rows34_editor import row_blob_fairness, row_editor_paths
from benchmarks.soak.rows34_logs import row_log_flood
from benchmarks.soak.rows34_page import Page
from benchmarks.soak.serving import start_server
from benchmarks.soak.wire import count, raw_request, status_of
from flaxdigits.serve.page import budgets


def row_ipv6(page, http) -> dict:
    """7: 300 uploads, each from another address of one IPv6 /64; IPv4 and IPv4-mapped."""
    codes = []
    for i in range(300):
        headers = {"X-Forwarded-For": f"2001:db8:0:1::{i + 1:x}"}
        codes.append(http.post("/gradio_api/upload", content=b"", headers=headers).status_code)
    mapped = []
    for i in range(300):
        address = "198.51.100.77" if i % 2 else "::ffff:198.51.100.77"
        headers = {"X-Forwarded-For": address}
        mapped.append(http.post("/gradio_api/upload", content=b"", headers=headers).status_code)
    return {
        "row": "7: one IPv6 /64 as 300 addresses; IPv4 and IPv4-mapped alternating",
        "one_64": count(codes),
        "ipv4_and_mapped": count(mapped),
        "upload_burst": budgets.RATES[budgets.UPLOAD].burst,
    }


def row_websocket(page, http) -> dict:
    """8a: a websocket handshake (no websocket library is installed: uvicorn answers itself)."""
    reply = raw_request(
        page.port,
        b"GET /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    return {"row": "8a: websocket handshake", "status": status_of(reply)}


ROWS_34 = (
    row_log_flood,
    row_blob_fairness,
    row_editor_paths,
    row_ipv6,
    row_websocket,
    row_te_and_cl,
    row_leases,
    row_empty_parts,
)


def stop_rows(models, work, checkout) -> list[dict]:
    """8b: the server stopped by SIGINT (Ctrl-C) and SIGTERM: is its temp dir left behind?"""
    out = []
    for name in ("SIGINT", "SIGTERM"):
        tmp = work / f"stop-{name}"
        tmp.mkdir()
        served = start_server(models, tmp, work / f"stop-{name}.log", checkout, ctrl_c=True)
        dirs = [d.name for d in tmp.iterdir() if d.name.startswith("flaxdigits-serve-")]
        t = time.monotonic()
        served.proc.send_signal(getattr(signal, name))
        try:
            code = served.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            code = "killed after 60 s"
        left = [d for d in dirs if (tmp / d).exists()]
        out.append(
            {
                "row": f"8b: stopped by {name}",
                "exit": code,
                "seconds": round(time.monotonic() - t, 1),
                "temp_dirs_left": len(left),
            }
        )
    return out


def run_rows_34(models, work, files, answers, checkout, only=()) -> list[dict]:
    """The rows named in only (all when empty), each on a page of its own; then 8b."""
    import httpx

    rows = []
    for i, row in enumerate(ROWS_34):
        if only and not any(o in row.__name__ for o in only):
            continue
        tmp = work / f"r{i}"  # short: a join names files by their full path
        tmp.mkdir()
        served = start_server(models, tmp, work / f"{row.__name__}.log", checkout)
        try:
            page = Page(served, files, answers)
            with httpx.Client(base_url=served.url, timeout=300) as http:
                rows.append(row(page, http))
        finally:
            served.stop()
        print(json.dumps(rows[-1]), flush=True)
    if not only or any("stop" in o for o in only):
        rows += stop_rows(models, work, checkout)
    return rows
