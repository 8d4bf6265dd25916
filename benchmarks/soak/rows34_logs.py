"""Issue 34's finding 3: requests that each write to the server's log (unknown event-stream
sessions, websocket handshakes, malformed request lines, editor values Gradio refuses), 100 of
each, with the log's growth."""

from __future__ import annotations

import time

from benchmarks.soak.wire import UPGRADE, count, raw_request, status_of, transport_errors

REQUESTS = 100


def log_size(page) -> tuple[int, int]:
    """(bytes, lines) of the server's log."""
    text = page.log.read_bytes()
    return len(text), text.count(b"\n")


def measure(page, send) -> dict:
    """send(i) for i < REQUESTS: statuses, seconds, and what the log grew by 2 s later."""
    b0, l0 = log_size(page)
    t = time.perf_counter()
    codes = [send(i) for i in range(REQUESTS)]
    seconds = time.perf_counter() - t
    time.sleep(2)
    b1, l1 = log_size(page)
    return {
        "status": count(codes),
        "seconds": round(seconds, 2),
        "log_bytes": b1 - b0,
        "log_lines": l1 - l0,
    }


def row_log_flood(page, http) -> dict:
    """3: requests that each write a log record: unknown SSE sessions, upgrades, bad lines."""

    def sse(i):
        try:
            return http.get(f"/gradio_api/queue/data?session_hash=unknown{i}").status_code
        except transport_errors() as e:  # the answer cut short: what the issue saw
            return type(e).__name__

    def upgrade(i):
        return status_of(raw_request(page.port, UPGRADE))

    def bad_line(i):
        return status_of(raw_request(page.port, b"GARBAGE /%d\r\n\r\n" % i))

    def bad_value(i):
        value = {"background": {"path": "x.png"}, "layers": [], "composite": None, "id": None}
        body = {
            "data": ["draw", value, "mnist"],
            "fn_index": page.fn_stroke,
            "session_hash": f"b{i}",
        }
        return http.post("/gradio_api/queue/join", json=body).status_code

    return {
        "row": "3: log flood",
        "unknown_session_sse_x100": measure(page, sse),
        "websocket_upgrade_x100": measure(page, upgrade),
        "malformed_request_line_x100": measure(page, bad_line),
        # Gradio prints each one's traceback
        "editor_value_gradio_refuses_x100": measure(page, bad_value),
        "honest_predict": page.honest("203.0.113.30"),
    }
