"""The guard in front of every route (page/guard.py), driven as plain ASGI: no server, no Gradio.

Body budgets (declared and streamed, chunked included), per-client rate limits and the forwarded
address, headers on every response and on served files, cut error echoes and log lines, and the
temp dir's budget with its upload ledger.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import threading
import time

import pytest

from flaxdigits.serve.page import budgets, clients, logs
from flaxdigits.serve.page.budgets import Rate
from flaxdigits.serve.page.clients import RateLimiter
from flaxdigits.serve.page.guard import Guard
from flaxdigits.serve.page.temp_files import FILE_CHARGE, TempFiles


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
    assert clients.client_address(scope, frozenset()) == "10.0.0.9"  # anyone may send the header
    assert clients.client_address(scope, frozenset({"10.0.0.9"})) == "5.6.7.8"
    # A chain through two trusted proxies: the hop the outer one saw.
    assert clients.client_address(scope, frozenset({"10.0.0.9", "5.6.7.8"})) == "1.2.3.4"
    garbage = {"client": ("10.0.0.9", 1), "headers": [(b"x-forwarded-for", b"<script>")]}
    assert clients.client_address(garbage, frozenset({"10.0.0.9"})) == "10.0.0.9"


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


def mine(caplog) -> list[logging.LogRecord]:
    """The records this test's thread logged: a page another test serves in this process logs
    from its own server thread."""
    return [r for r in caplog.records if r.thread == threading.get_ident()]


@pytest.fixture
def guard_log(monkeypatch, caplog):
    """The guard's own logger without the server-wide cap a served page in this process put on it
    (bound_logs): these tests count log_error's own lines. The cap also sits on the root logger's
    handlers of that moment, and pytest's capture handler is one for the whole session: a page
    served earlier in this worker may have spent the minute's records on it."""
    logger = logging.getLogger("flaxdigits.serve.page.guard")
    monkeypatch.setattr(logger, "filters", [])
    capped = [f for f in caplog.handler.filters if not isinstance(f, logs.BoundedLogFilter)]
    monkeypatch.setattr(caplog.handler, "filters", capped)
    monkeypatch.setattr(logs, "_error_window", {"start": time.monotonic(), "count": 0})
    return logger


def test_a_crashing_route_gets_a_clean_answer_and_one_short_log_line(caplog, guard_log):
    class Crash(Reader):  # Gradio's validation-error handler on a body that is not UTF-8
        async def __call__(self, scope, receive, send):
            raise UnicodeDecodeError("utf-8", b"\xff" * 10_000, 0, 1, "invalid start byte")

    with caplog.at_level(logging.WARNING, logger="flaxdigits.serve.page.guard"):
        for _ in range(budgets.ERROR_LOGS_PER_MINUTE + 50):
            status, headers, body = call(Guard(Crash()), "/gradio_api/reset", [b"\xff"])
            assert status == 400 and body == b"Bad request."
    assert headers["x-content-type-options"] == "nosniff"
    assert len(mine(caplog)) == budgets.ERROR_LOGS_PER_MINUTE  # the rest counted, not logged
    assert all(len(r.getMessage()) < budgets.LOG_CHARS + 100 for r in mine(caplog))


def test_a_crash_after_the_answer_started_ends_it_with_one_line_not_a_raise(caplog, guard_log):
    class Late(Reader):  # Gradio's event stream on an unknown session raises mid-answer
        async def __call__(self, scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"data: x", "more_body": True})
            raise RuntimeError("late")

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/gradio_api/queue/data", "headers": []}
    with caplog.at_level(logging.WARNING, logger="flaxdigits.serve.page.guard"):
        asyncio.run(Guard(Late())(scope, receive, send))  # no exception reaches the server
    assert [m["type"] for m in sent] == ["http.response.start", *["http.response.body"] * 2]
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    (record,) = mine(caplog)
    assert "RuntimeError: late" in record.getMessage() and not record.exc_info


def test_log_records_are_cut(caplog):
    logger = logging.getLogger("flaxdigits.test_guard")
    logger.addFilter(logs.BoundedLogFilter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("value: %s", "B" * 100_000)
        try:
            raise ValueError("C" * 100_000)
        except ValueError:
            logger.exception("failed")
    first, second = mine(caplog)
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


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_room_is_reserved_in_all_and_per_client_address(tmp_path):
    temp = TempFiles(tmp_path, budget=100_000, max_files=10, client_bytes=40_000, client_files=6)
    a = temp.reserve(30_000, 4, "a")
    assert a is not None
    assert temp.reserve(20_000, 1, "a") is None  # a's bytes: 30,000 + 20,000 > 40,000
    assert temp.reserve(4096, 4, "a") is None  # a's files: 4 + 4 > 6
    b = temp.reserve(30_000, 4, "b")
    assert b is not None
    assert temp.reserve(30_000, 1, "c") is not None
    assert temp.reserve(10_001, 1, "d") is None  # all: 90,000 + 10,001 > 100,000
    assert temp.usage() == (90_000, 9)
    temp.finish(a, clean=True)
    assert temp.reserve(10_001, 1, "d") is not None
    assert temp.reserve(1, 5, "e") is None  # all: 6 + 5 files > 10
    assert temp.reserve(0, 0, "e") is not None  # a request that may write nothing


def test_every_file_is_charged_at_least_a_block(tmp_path):
    temp = TempFiles(tmp_path, client_files=10**6)
    assert temp.reserve(600, 4, "a") is not None  # 4 empty parts declare ~600 bytes
    assert temp.usage() == (4 * FILE_CHARGE, 4)
    (path,) = files_of(tmp_path, [0])
    temp.handed_out([path], "a")
    assert temp.usage() == (5 * FILE_CHARGE, 5)


def test_reserving_never_walks_the_tree(tmp_path, monkeypatch):
    temp = TempFiles(tmp_path)
    files_of(tmp_path, [10] * 50)

    def no_walk(*args):
        raise AssertionError("a walk of the temp dir on the request's path")

    monkeypatch.setattr(os, "scandir", no_walk)
    monkeypatch.setattr(os, "walk", no_walk)
    for i in range(100):
        ticket = temp.reserve(1000, 4, f"10.0.0.{i}")
        temp.finish(ticket, clean=True)


def test_an_unclaimed_upload_expires_a_claimed_one_waits_a_read_one_goes(tmp_path):
    clock = Clock()
    temp = TempFiles(tmp_path, lease_s=60, claim_s=300, grace_s=5, clock=clock)
    unclaimed, claimed, read = files_of(tmp_path, [100, 100, 100])
    temp.handed_out([unclaimed, claimed, read], "a")
    temp.claim([claimed, read, "/etc/passwd"])
    clock.now += 30
    temp.release(read)
    clock.now += 31
    temp.sweep()
    assert not os.path.exists(unclaimed) and not os.path.exists(os.path.dirname(unclaimed))
    assert os.path.exists(claimed) and not os.path.exists(read)
    clock.now += 300
    temp.sweep()
    assert not os.path.exists(claimed)  # a claim is a longer lease, not a hold for good
    assert temp.usage() == (0, 0) and not temp._owners  # the bookkeeping goes with the files


def test_the_same_upload_twice_is_one_file_deleted_after_its_last_release(tmp_path):
    clock = Clock()
    temp = TempFiles(tmp_path, grace_s=5, clock=clock)
    (path,) = files_of(tmp_path, [10])
    temp.handed_out([path], "a")
    temp.handed_out([path], "b")  # the same bytes: Gradio gives both the same path
    assert temp.usage() == (FILE_CHARGE, 1)
    temp.release(path)
    clock.now += 10
    temp.sweep()
    assert os.path.exists(path)  # b has not predicted yet
    temp.release(path)
    temp.sweep()
    assert os.path.exists(path)  # within the grace a new upload of it may still name it
    clock.now += 6
    temp.sweep()
    assert not os.path.exists(path)
    temp.release("/etc/passwd")  # never handed out: never touched
    assert os.path.exists("/etc/passwd")


def test_a_new_upload_of_the_same_bytes_is_not_deleted_with_the_old_lease(tmp_path):
    clock = Clock()
    temp = TempFiles(tmp_path, grace_s=5, clock=clock)
    (path,) = files_of(tmp_path, [10])
    temp.handed_out([path], "a")
    temp.release(path)
    clock.now += 6  # due: but Gradio has just renamed a new upload of it over the path
    fresh = tmp_path / "tmpnew"
    fresh.write_bytes(b"x" * 10)
    os.rename(fresh, path)
    temp.sweep()
    assert os.path.exists(path)  # not the file the lease was given: its upload's own lease
    temp.handed_out([path], "b")
    temp.release(path)
    clock.now += 6
    temp.sweep()
    assert not os.path.exists(path)


def test_a_released_file_is_deleted_through_a_symlinked_temp_dir(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    clock = Clock()
    temp = TempFiles(tmp_path / "link", grace_s=5, clock=clock)
    (path,) = files_of(tmp_path / "link", [10])  # as Gradio names it: through the link
    temp.handed_out([path], "a")
    temp.release(path)
    clock.now += 6
    temp.sweep()
    assert not (real / "h0" / "f.png").exists()


def test_the_same_upload_twice_in_one_request_is_held_twice(tmp_path):
    clock = Clock()
    temp = TempFiles(tmp_path, grace_s=5, clock=clock)
    (path,) = files_of(tmp_path, [10])
    temp.handed_out([path, path], "a")  # two identical files in one upload: one path, twice
    temp.release(path)
    clock.now += 10
    temp.sweep()
    assert os.path.exists(path)  # the second has not been read yet
    temp.release(path)
    clock.now += 6
    temp.sweep()
    assert not os.path.exists(path)


def test_a_lease_whose_file_is_gone_is_dropped_and_gradio_told(tmp_path):
    clock = Clock()
    forgotten = []
    temp = TempFiles(tmp_path, clock=clock)
    temp.forget = forgotten.append
    gone, kept = files_of(tmp_path, [10, 10])
    temp.handed_out([gone, kept], "a")
    os.unlink(gone)  # Gradio's own sweep, or anyone
    clock.now += 1
    temp.sweep()
    assert temp.usage() == (FILE_CHARGE, 1)
    assert forgotten == []  # told on the event loop: at the next hand-out
    temp.handed_out([], "a")
    assert forgotten == [gone]


def test_gradio_is_told_to_forget_a_path_by_the_name_it_gave_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    clock = Clock()
    forgotten = []
    temp = TempFiles(tmp_path / "link", grace_s=5, clock=clock)
    temp.forget = forgotten.append
    (path,) = files_of(tmp_path / "link", [10])  # Gradio's list holds this name, not the real one
    temp.handed_out([path], "a")
    temp.release(path)
    clock.now += 6
    temp.sweep()
    temp.handed_out([], "a")
    assert forgotten == [path] and path != os.path.realpath(path)


def test_the_same_bytes_uploaded_again_after_their_file_was_swept_stay_in_gradios_list(tmp_path):
    """Gradio names an upload by its bytes: a second upload of a drawing whose first copy was
    read and swept lands at the same path, in Gradio's list again; telling Gradio then to forget
    the first copy's path would make it refuse the new upload ("not uploaded by a user")."""
    clock = Clock()
    forgotten = []
    temp = TempFiles(tmp_path, grace_s=5, clock=clock)
    temp.forget = forgotten.append
    (path,) = files_of(tmp_path, [10])
    temp.handed_out([path], "a")
    temp.release(path)
    clock.now += 6
    temp.sweep()  # the first copy is deleted: Gradio is to forget it at the next hand-out
    assert not os.path.exists(path)
    files_of(tmp_path, [10])  # the same bytes uploaded again: the same path, in Gradio's list
    temp.handed_out([path], "a")
    assert forgotten == []  # handed out now: not to be forgotten
    assert temp.usage() == (FILE_CHARGE, 1)


def test_other_files_are_counted_by_the_sweep(tmp_path):
    temp = TempFiles(tmp_path)
    files_of(tmp_path, [10_000, 20])  # Gradio's outputs: no lease
    assert temp.usage() == (0, 0)
    temp.sweep()
    assert temp.usage() == (10_000 + FILE_CHARGE, 2)


def test_a_stray_part_of_a_failed_upload_goes_and_its_charge_with_it(tmp_path):
    temp = TempFiles(tmp_path)
    ticket = temp.reserve(20_000, 4, "a")
    stray = tmp_path / "tmpabc123"  # Gradio's temp file of a part, left by a cut request
    with open(stray, "wb") as f:
        f.write(b"x" * 5000)
        temp.sweep()  # open: an upload in flight, neither counted nor deleted
        assert stray.exists() and temp.usage() == (20_000, 4)
    temp.finish(ticket, clean=False)
    assert temp.usage() == (20_000, 4)  # charged until its strays are gone
    temp.sweep()  # closed, once: counted
    assert stray.exists() and temp.usage() == (20_000 + 5000, 5)
    temp.sweep()  # closed, twice: a stray, deleted, and the request's charge with it
    assert not stray.exists() and temp.usage() == (0, 0) and not temp._owners


def test_an_upload_is_refused_with_507_when_its_address_or_the_disk_is_full(tmp_path):
    temp = TempFiles(tmp_path, budget=30_000, client_bytes=20_000)
    app = Guard(Reader(body=b"[]"), temp_files=temp)
    ok = call(app, "/gradio_api/upload", [b"x" * 50], headers=[("Content-Length", "50")])
    assert ok[0] == 200 and temp.usage() == (0, 0)  # the reservation ends with the request
    big = [("Content-Length", "18000")]
    ticket = temp.reserve(18_000, 1, "10.0.0.1")  # an upload of the same client in flight
    assert call(app, "/gradio_api/upload", [b"x" * 18_000], headers=big)[0] == 507
    other = call(app, "/gradio_api/upload", [b"x" * 100], client=("10.0.0.2", 1))
    assert other[0] == 507  # chunked: the route's whole budget, more than the disk's
    temp.finish(ticket, clean=True)
    assert call(app, "/gradio_api/upload", [b"x" * 18_000], headers=big)[0] == 200


def test_an_uploads_paths_become_leases_of_its_client(tmp_path):
    (path,) = files_of(tmp_path, [10])
    temp = TempFiles(tmp_path)
    app = Guard(Reader(body=json.dumps([path]).encode()), temp_files=temp)
    status, _, body = call(app, "/gradio_api/upload", [b"x"], client=("2001:db8::7", 1))
    assert status == 200 and json.loads(body) == [path]
    assert temp._leases[os.path.realpath(path)].owner == "2001:db8::/64"


def test_a_queue_join_claims_the_uploads_it_names(tmp_path):
    clock = Clock()
    (path,) = files_of(tmp_path, [10])
    temp = TempFiles(tmp_path, lease_s=60, claim_s=300, clock=clock)
    temp.handed_out([path], "a")
    join = json.dumps({"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, "mnist"]})
    assert call(Guard(Reader(), temp_files=temp), "/gradio_api/queue/join", [join.encode()])[0]
    clock.now += 120
    temp.sweep()
    assert os.path.exists(path)  # claimed: waits for the prediction past the 60 s lease


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


# ---------------------------------------------------------------- scopes, framing and parts


def test_a_websocket_is_closed_before_the_app_sees_it_and_other_scopes_end():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "websocket.connect"}

    g = Guard(app)
    asyncio.run(g({"type": "websocket", "path": "/", "headers": []}, receive, send))
    assert sent == [{"type": "websocket.close", "code": 1008}]  # the server answers 403
    asyncio.run(g({"type": "webtransport", "path": "/"}, receive, send))
    asyncio.run(g({"type": "lifespan"}, receive, send))
    assert seen == ["lifespan"]


@pytest.mark.parametrize(
    "headers",
    [
        [("Content-Length", "1"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "gzip, chunked")],
        [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "identity")],
        [("Content-Type", "text/plain"), ("Content-Type", "multipart/form-data; boundary=b")],
    ],
)
def test_framing_a_proxy_could_read_otherwise_is_refused(headers):
    inner = Reader()
    status, _, body = call(Guard(inner), "/gradio_api/upload", [b"x"], headers=headers)
    assert status == 400 and inner.seen is None
    ok = call(
        Guard(Reader()), "/gradio_api/upload", [b"x"], headers=[("Transfer-Encoding", "Chunked")]
    )
    assert ok[0] == 200


def parts_body(fields, boundary="b"):
    out = b""
    for name, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\nxyz\r\n".encode()
    return out + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize(
    ("path", "fields", "status"),
    [
        ("/gradio_api/upload", [("files", "a.png")] * budgets.MULTIPART_PARTS["upload"], 200),
        ("/gradio_api/upload", [("files", "a.png")] * (budgets.MULTIPART_PARTS["upload"] + 1), 413),
        ("/gradio_api/upload", [("files", "a.png"), ("other", "b.png")], 400),
        ("/gradio_api/upload", [("files", "a.png"), ("note", None)], 200),  # a field, no file
        ("/gradio_api/component_server", [("id", None)] * 6 + [("file", "blob")], 200),
        ("/gradio_api/component_server", [("id", None)] * 11, 413),
        ("/gradio_api/upload", [("files", "a" * 9000 + ".png")], 400),  # a header past 8 KiB
    ],
)
def test_multipart_bodies_are_held_to_their_parts(path, fields, status):
    inner = Reader(body=b"[]")
    body = parts_body(fields)
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]  # parts split across chunks
    headers = [("Content-Type", "multipart/form-data; boundary=b")]
    got, _, text = call(Guard(inner), path, chunks, headers=headers)
    assert got == status, text
    assert (inner.seen is not None) == (status == 200)  # a refused body never reaches the app


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::99", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),
    ],
)
def test_clients_are_keyed_ipv6_by_64_and_mapped_ipv4_as_ipv4(address, key):
    assert clients.client_key(address) == key
    scope = {"client": (address, 1), "headers": []}
    assert clients.client_address(scope, frozenset()) == key


def test_the_log_filter_caps_records_a_minute_and_strips_tracebacks(caplog):
    logger = logging.getLogger("flaxdigits.test_guard.flood")
    log_filter = logs.BoundedLogFilter(per_minute=50)
    logger.addFilter(log_filter)
    with caplog.at_level(logging.INFO, logger=logger.name):
        for i in range(500):
            try:
                raise ValueError(f"bad {i}\n" + "frame\n" * 80)
            except ValueError:
                logger.exception("request failed")
        assert len(caplog.records) == 50
        assert all(r.exc_info is None and r.exc_text is None for r in caplog.records)
        assert "ValueError: bad 0" in caplog.records[0].getMessage()
        assert all("\n" not in r.getMessage() for r in caplog.records)
        later = logging.LogRecord(logger.name, logging.WARNING, __file__, 1, "later", (), None)
        later.created += 61
        logger.handle(later)
    assert (
        caplog.records[-1].getMessage() == "[450 log records not written in the last minute] later"
    )


def test_stderr_is_held_to_lines_a_minute_each_cut():
    out = io.StringIO()
    stream = logs.BoundedStream(out, limit=40, per_minute=30)
    for i in range(200):  # a traceback per failed event, written in pieces as print_exc does
        stream.write(f"Traceback {i}:\n  File ")
        stream.write("x" * 100 + "\n")
    lines = out.getvalue().splitlines()
    assert len(lines) == 30
    assert lines[0] == "Traceback 0:" and all(len(line) < 40 + 20 for line in lines)
    stream._window -= 61  # a minute later
    stream.write("later\n")
    assert out.getvalue().splitlines()[-2:] == [
        "[370 lines not written in the last minute]",
        "later",
    ]
