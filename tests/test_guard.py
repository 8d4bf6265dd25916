"""The guard in front of every route (page/guard.py), driven as plain ASGI: no server, no Gradio.

Body budgets (declared and streamed, chunked included), per-client rate limits and the forwarded
address, headers on every response and on served files, cut error echoes and log lines, and the
temp dir's budget with its upload ledger.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

import pytest

from flaxdigits.serve.page import budgets, guard
from flaxdigits.serve.page.budgets import Rate
from flaxdigits.serve.page.guard import Guard, RateLimiter
from flaxdigits.serve.page.temp_files import TempFiles


class Reader:
    """A stand-in for Gradio's routes: reads the body as Starlette does and reports its length."""

    def __init__(self, status=200, body=None, content_type=b"application/json"):
        self.status, self.body, self.content_type = status, body, content_type
        self.seen = None

    async def __call__(self, scope, receive, send):
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionError("client disconnected")  # Starlette's ClientDisconnect
            total += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.seen = total
        body = self.body if self.body is not None else json.dumps({"read": total}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-type", self.content_type)],
            }
        )
        await send({"type": "http.response.body", "body": body})


def call(app, path, chunks=(), headers=(), client=("10.0.0.1", 1234), method="POST"):
    """Drive one request through app; returns (status, headers dict, body)."""
    chunks = list(chunks)
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": client,
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


# ------------------------------------------------------------------------------------ bodies


@pytest.mark.parametrize(
    ("path", "budget"),
    [
        ("/gradio_api/upload", budgets.UPLOAD_BODY_BYTES),
        ("/gradio_api/component_server", budgets.BLOB_BODY_BYTES),
        ("/gradio_api/component_server/", budgets.BLOB_BODY_BYTES),
        ("/gradio_api/queue/join", budgets.OTHER_BODY_BYTES),
        ("/gradio_api/reset", budgets.OTHER_BODY_BYTES),
        ("/", budgets.OTHER_BODY_BYTES),
    ],
)
def test_a_streamed_body_is_cut_at_its_routes_budget(path, budget):
    inner = Reader()
    app = Guard(inner)
    chunk = b"x" * 4096
    fits = [chunk] * (budget // 4096) + [b"x" * (budget % 4096)]
    status, _, body = call(app, path, fits)  # chunked: no Content-Length
    assert status == 200 and json.loads(body) == {"read": budget}
    inner.seen = None
    status, _, body = call(app, path, [*fits, b"y"])
    assert status == 413 and b"budget" in body
    assert inner.seen is None  # the app never got the whole body


def test_a_declared_length_over_budget_is_refused_before_reading():
    inner = Reader()
    status, headers, _ = call(
        Guard(inner),
        "/gradio_api/upload",
        [b"x"],
        headers=[("Content-Length", str(40 * 9 * 1024 * 1024))],
    )
    assert status == 413 and headers["connection"] == "close"
    assert inner.seen is None
    status, _, _ = call(Guard(inner), "/", [b"x"], headers=[("Content-Length", "12x")])
    assert status == 400


def test_an_app_that_answers_before_the_body_ends_still_gets_413_when_it_overflows():
    class Early(Reader):  # Gradio's multipart parser answers 400 on a cut stream
        async def __call__(self, scope, receive, send):
            while (await receive())["type"] != "http.disconnect":
                pass
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b"There was an error parsing"})

    status, _, _ = call(Guard(Early()), "/gradio_api/queue/join", [b"x" * 5000] * 3)
    assert status == 413


# -------------------------------------------------------------------------------- rate limits


def test_token_bucket_grants_a_burst_then_the_refill_rate():
    now = [0.0]
    limiter = RateLimiter({"upload": Rate(burst=3, per_second=2.0)}, clock=lambda: now[0])
    assert [limiter.take("upload", "a") for _ in range(3)] == [0.0] * 3
    assert limiter.take("upload", "a") == pytest.approx(0.5)
    assert limiter.take("upload", "b") == 0.0  # another client has its own bucket
    assert limiter.take("other", "a") == 0.0  # unlimited route
    now[0] = 0.5
    assert limiter.take("upload", "a") == 0.0
    assert limiter.take("upload", "a") > 0


def test_bucket_table_is_bounded():
    limiter = RateLimiter({"upload": Rate(1, 1.0)}, max_clients=10)
    for i in range(1000):
        limiter.take("upload", f"10.0.{i // 256}.{i % 256}")
    assert len(limiter._buckets) == 10


def test_rate_limited_routes_answer_429_with_retry_after():
    limiter = RateLimiter({budgets.JOIN: Rate(burst=2, per_second=0.1)})
    app = Guard(Reader(), limiter=limiter)
    codes = [call(app, "/gradio_api/queue/join", [b"{}"])[0] for _ in range(3)]
    assert codes == [200, 200, 429]
    status, headers, _ = call(app, "/gradio_api/queue/join", [b"{}"])
    assert status == 429 and int(headers["retry-after"]) >= 1
    assert call(app, "/gradio_api/queue/join", [b"{}"], client=("10.0.0.2", 1))[0] == 200
    assert call(app, "/config", method="GET")[0] == 200  # not a limited route


def test_forwarded_address_is_honoured_only_from_a_trusted_proxy():
    scope = {"client": ("10.0.0.9", 1), "headers": [(b"x-forwarded-for", b"1.2.3.4, 5.6.7.8")]}
    assert guard.client_address(scope, frozenset()) == "10.0.0.9"  # anyone may send the header
    assert guard.client_address(scope, frozenset({"10.0.0.9"})) == "5.6.7.8"
    # A chain through two trusted proxies: the hop the outer one saw.
    assert guard.client_address(scope, frozenset({"10.0.0.9", "5.6.7.8"})) == "1.2.3.4"
    garbage = {"client": ("10.0.0.9", 1), "headers": [(b"x-forwarded-for", b"<script>")]}
    assert guard.client_address(garbage, frozenset({"10.0.0.9"})) == "10.0.0.9"


def test_clients_behind_a_trusted_proxy_have_separate_buckets():
    limiter = RateLimiter({budgets.UPLOAD: Rate(burst=1, per_second=0.01)})
    app = Guard(Reader(body=b"[]"), limiter=limiter, trusted_proxies=["10.0.0.1"])
    hops = [("X-Forwarded-For", "1.1.1.1")], [("X-Forwarded-For", "2.2.2.2")]
    assert [call(app, "/gradio_api/upload", [b""], headers=h)[0] for h in hops] == [200, 200]
    assert call(app, "/gradio_api/upload", [b""], headers=hops[0])[0] == 429


# ------------------------------------------------------------------------------------ headers


def test_every_response_carries_the_security_headers():
    for path, app in [("/", Reader()), ("/x", Reader(status=404, body=b"Not Found"))]:
        _, headers, _ = call(Guard(app), path, method="GET")
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert "object-src 'none'" in headers["content-security-policy"]
    _, headers, _ = call(Guard(Reader()), "/", [b"x" * 9000])  # our own refusals too
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("content_type", "inline"),
    [
        (b"image/png", True),
        (b"image/webp", True),
        (b"text/html; charset=utf-8", False),
        (b"image/svg+xml", False),
        (b"application/javascript", False),
    ],
)
def test_served_files_are_inline_only_as_page_image_types(content_type, inline):
    app = Guard(Reader(body=b"<html>", content_type=content_type))
    _, headers, _ = call(app, "/gradio_api/file=/tmp/x/evil", method="GET")
    if inline:
        assert headers["content-type"] == content_type.decode()
        assert "content-disposition" not in headers
    else:
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-disposition"] == "attachment"


def test_a_long_error_body_is_not_echoed():
    echo = json.dumps({"detail": [{"input": "A" * 100_000}]}).encode()
    status, headers, body = call(Guard(Reader(status=422, body=echo)), "/gradio_api/x", [b"{}"])
    assert status == 422 and len(body) < 200 and b"AAAA" not in body
    assert int(headers["content-length"]) == len(body)
    short = b'{"detail": "Not Found"}'
    assert call(Guard(Reader(status=404, body=short)), "/nope", method="GET")[2] == short


def test_a_crashing_route_gets_a_clean_answer_and_one_short_log_line(caplog, monkeypatch):
    class Crash(Reader):  # Gradio's validation-error handler on a body that is not UTF-8
        async def __call__(self, scope, receive, send):
            raise UnicodeDecodeError("utf-8", b"\xff" * 10_000, 0, 1, "invalid start byte")

    monkeypatch.setattr(guard, "_error_window", {"start": time.monotonic(), "count": 0})
    with caplog.at_level(logging.WARNING, logger="flaxdigits.serve.page.guard"):
        for _ in range(budgets.ERROR_LOGS_PER_MINUTE + 50):
            status, headers, body = call(Guard(Crash()), "/gradio_api/reset", [b"\xff"])
            assert status == 400 and body == b"Bad request."
    assert headers["x-content-type-options"] == "nosniff"
    assert len(caplog.records) == budgets.ERROR_LOGS_PER_MINUTE  # the rest counted, not logged
    assert all(len(r.getMessage()) < budgets.LOG_CHARS + 100 for r in caplog.records)

    class Late(Reader):  # a crash after the answer started cannot be answered again
        async def __call__(self, scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise RuntimeError("late")

    with pytest.raises(RuntimeError, match="late"):
        call(Guard(Late()), "/", method="GET")


def test_log_records_are_cut(caplog):
    logger = logging.getLogger("flaxdigits.test_guard")
    logger.addFilter(guard.BoundedLogFilter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("value: %s", "B" * 100_000)
        try:
            raise ValueError("C" * 100_000)
        except ValueError:
            logger.exception("failed")
    first, second = caplog.records
    assert len(first.getMessage()) < budgets.LOG_CHARS + 40
    text = caplog.text
    assert "B" * 400 not in text and "C" * 400 not in text and "more]" in text


# ------------------------------------------------------------------------------- temp files


def files_of(directory, sizes):
    paths = []
    for i, size in enumerate(sizes):
        path = directory / f"h{i}" / "f.png"
        path.parent.mkdir()
        path.write_bytes(b"x" * size)
        paths.append(str(path))
    return paths


def test_room_is_made_by_evicting_old_unheld_uploads_else_refused(tmp_path):
    temp = TempFiles(tmp_path, budget=1000, evict_after_s=60)
    old, held, fresh = files_of(tmp_path, [400, 300, 200])
    long_ago = time.time() - 3600
    os.utime(old, (long_ago, long_ago))
    os.utime(held, (long_ago, long_ago))
    temp.handed_out([held])
    assert temp.usage() == 900
    assert temp.reserve(400)  # evicts `old`, keeps the held and the fresh one
    assert not os.path.exists(old) and os.path.exists(held) and os.path.exists(fresh)
    assert not temp.reserve(200)  # 300 + 200 + 400 reserved + 200 > 1000, nothing evictable
    temp.unreserve(400)
    assert temp.reserve(200)


def test_an_upload_is_deleted_after_its_last_release_and_grace(tmp_path):
    now = [1000.0]
    temp = TempFiles(tmp_path, grace_s=5, clock=lambda: now[0])
    (path,) = files_of(tmp_path, [10])
    temp.handed_out([path, path])  # two clients uploaded the same bytes
    temp.release(path)
    now[0] += 10
    temp.sweep()
    assert os.path.exists(path)  # the second client has not predicted yet
    temp.release(path)
    temp.sweep()
    assert os.path.exists(path)  # within the grace a new upload of it may still name it
    now[0] += 6
    temp.sweep()
    assert not os.path.exists(path) and not os.path.exists(os.path.dirname(path))
    temp.release("/etc/passwd")  # outside the temp dir: never touched
    assert os.path.exists("/etc/passwd")


def test_an_upload_is_refused_with_507_when_the_disk_budget_is_full(tmp_path):
    files_of(tmp_path, [900])
    app = Guard(Reader(body=b"[]"), temp_files=TempFiles(tmp_path, budget=1000))
    ok = call(app, "/gradio_api/upload", [b"x" * 50], headers=[("Content-Length", "50")])
    assert ok[0] == 200
    full = call(app, "/gradio_api/upload", [b"x" * 500], headers=[("Content-Length", "500")])
    assert full[0] == 507
    chunked = call(app, "/gradio_api/upload", [b"x" * 50])  # no length: the route's budget
    assert chunked[0] == 507


def test_budgets_are_listed_for_help_and_the_page():
    text = budgets.describe_budgets()
    for needle in (
        f"{budgets.UPLOAD_BODY_BYTES:,}",
        f"{budgets.TEMP_DIR_BYTES:,}",
        "editor: layers",
    ):
        assert needle in text


def test_the_resolved_client_is_left_for_the_routes():
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope["state"])
        await Reader(body=b"{}")(scope, receive, send)

    async def run():
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/gradio_api/component_server",
            "headers": [(b"x-forwarded-for", b"203.0.113.5")],
            "client": ("10.0.0.1", 1),
            "state": {},
        }
        messages = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive():
            return messages.pop(0)

        async def send(message):
            pass

        await Guard(app, trusted_proxies=["10.0.0.1"])(scope, receive, send)

    asyncio.run(run())
    assert seen[budgets.CLIENT_STATE] == "203.0.113.5"


def test_serve_help_prints_every_budget(capsys):
    from flaxdigits.cli.main import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert budgets.describe_budgets() in out and "--trusted-proxy" in out
