"""The guard in front of every route the page's server mounts: bodies, rates, disk and headers.

Gradio mounts some forty routes beside /predict (uploads, the editor's blob store, the queue,
files, streams, login, ...). This ASGI layer sits in front of all of them and holds each request to
a budget before Gradio reads a byte of it:

- **Bodies** are counted as they stream in, chunked ones included: past the route's budget the
  request ends with 413, whatever its Content-Length said (a too-large declared length is refused
  before anything is read).
- **Rates**: uploads, editor blobs and queue joins take a token from the client's bucket, or get
  429. The client is the peer address; X-Forwarded-For is read only from a configured proxy.
- **Disk**: an upload first needs room in the temp dir's budget (oldest unused files evicted,
  else 507), and every path it hands out is counted until a prediction releases it
  (TempFiles, in serve/page/temp_files.py).
- **Headers**: nosniff, a Content-Security-Policy, Referrer-Policy on every response; files are
  served inline only as the image types the page shows, anything else as an attachment.
- **Echoes**: an error response longer than ECHO_BYTES (FastAPI's 422 repeats the request) is
  cut to a short message, and log records are cut to LOG_CHARS.

Every budget is a named constant in serve/page/budgets.py (BUDGETS lists them for `flaxdigits serve
--help`). Standard library only, plus the budgets and TempFiles: importing it starts nothing.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from flaxdigits.serve.page.budgets import (
    BODY_BYTES,
    CLIENT_STATE,
    ECHO_BYTES,
    ERROR_LOGS_PER_MINUTE,
    FILE,
    HOLD_BYTES,
    INLINE_TYPES,
    LOG_CHARS,
    MAX_CLIENTS,
    OTHER,
    OTHER_BODY_BYTES,
    RATES,
    SECURITY_HEADERS,
    UPLOAD,
    route_class,
)
from flaxdigits.serve.page.temp_files import TempFiles

# ------------------------------------------------------------------------------ rate limits


class RateLimiter:
    """Token buckets per (route class, client), the least recently used dropped past max_clients."""

    def __init__(self, rates=RATES, max_clients: int = MAX_CLIENTS, clock=time.monotonic):
        self.rates = dict(rates)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, kind: str, client: str) -> float:
        """Take a token: 0.0 when granted, else the seconds until one is free."""
        rate = self.rates.get(kind)
        if rate is None:
            return 0.0
        now = self.clock()
        key = (kind, client)
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - last) * rate.per_second)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / rate.per_second
            self._buckets[key] = [tokens, now]
            while len(self._buckets) > self.max_clients * len(self.rates):
                self._buckets.popitem(last=False)
        return wait


def client_address(scope, trusted_proxies: frozenset[str]) -> str:
    """The peer's address; from a trusted proxy, the last X-Forwarded-For hop it did not add."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if peer not in trusted_proxies:
        return peer
    forwarded = [
        value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"
    ]
    hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
    for hop in reversed(hops):  # the right-most hops are the ones our proxies wrote
        if hop in trusted_proxies:
            continue
        try:
            return str(ipaddress.ip_address(hop))
        except ValueError:
            return peer  # a hop that is no address: the chain cannot be trusted past it
    return peer


# ------------------------------------------------------------------------------------ the guard


@dataclass
class Stats:
    """Refusals by status, for tests and the soak benchmark."""

    refused: dict[int, int] = field(default_factory=dict)

    def count(self, status: int) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1


class Guard:
    """ASGI middleware: body budgets, rate limits, disk budget, headers (see the module doc)."""

    def __init__(
        self,
        app,
        *,
        trusted_proxies=(),
        temp_files: TempFiles | None = None,
        limiter: RateLimiter | None = None,
        body_bytes=None,
        stats: Stats | None = None,
    ):
        self.app = app
        self.trusted_proxies = frozenset(trusted_proxies)
        self.temp_files = temp_files
        self.limiter = limiter or RateLimiter()
        self.body_bytes = {**BODY_BYTES, **(body_bytes or {})}
        self.stats = stats if stats is not None else Stats()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = route_class(scope["path"])
        budget = self.body_bytes.get(kind, OTHER_BODY_BYTES)
        declared = _content_length(scope["headers"])
        if declared == -1:
            await self._refuse(send, 400, "Bad Content-Length.")
            return
        if declared is not None and declared > budget:
            await self._refuse(send, 413, f"Request body over this route's {budget:,}-byte budget.")
            return
        client = client_address(scope, self.trusted_proxies)
        if isinstance(scope.get("state"), dict):  # Starlette's request.state, per request
            scope["state"][CLIENT_STATE] = client
        wait = self.limiter.take(kind, client)
        if wait:
            await self._refuse(
                send,
                429,
                "Too many requests from this address: slow down.",
                [(b"retry-after", str(max(1, round(wait))).encode())],
            )
            return
        reserved = 0
        if kind == UPLOAD and self.temp_files is not None:
            reserved = declared if declared is not None else budget
            if not self.temp_files.reserve(reserved):
                await self._refuse(send, 507, "The server's upload space is full: try later.")
                return
        try:
            await self._forward(scope, receive, send, kind, budget)
        finally:
            if reserved:
                self.temp_files.unreserve(reserved)

    async def _forward(self, scope, receive, send, kind, budget):
        received = 0
        over = False  # the body passed its budget: whatever the app answers, we answer 413
        replied = False  # something reached the client: too late to answer ourselves
        status = 0
        held_start = None  # a response held back: an upload's paths, or an error to cut
        held_body: list[bytes] = []
        held_bytes = 0

        async def counted_receive():
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > budget:
                    over = True  # the app sees a client that went away
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            nonlocal replied, status, held_start, held_bytes
            if over:
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = _with_security_headers(message.get("headers", []), kind)
                message = {**message, "headers": headers}
                uploaded = kind == UPLOAD and status == 200 and self.temp_files is not None
                if uploaded or 400 <= status < 500:
                    held_start = message
                    return
            elif message["type"] == "http.response.body" and held_start is not None:
                chunk = message.get("body", b"")
                if held_bytes + len(chunk) <= HOLD_BYTES:
                    held_body.append(chunk)
                held_bytes += len(chunk)  # past HOLD_BYTES only counted: it will be replaced
                if message.get("more_body", False):
                    return
                start, held_start = held_start, None
                replied = True
                await self._flush(start, b"".join(held_body), held_bytes, send, kind, status)
                return
            replied = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception as e:
            if replied:
                raise
            if not over:  # a crash in a route: one short log line and a clean answer
                _log_error(scope, e)
                code = 400 if isinstance(e, UnicodeDecodeError) else 500
                await self._refuse(send, code, "Bad request." if code == 400 else "Server error.")
                return
        if over and not replied:
            await self._refuse(send, 413, f"Request body over this route's {budget:,}-byte budget.")

    async def _flush(self, start, body: bytes, nbytes: int, send, kind, status):
        if kind == UPLOAD and status == 200 and self.temp_files is not None:
            if nbytes == len(body):
                try:
                    paths = json.loads(body)
                except ValueError:
                    paths = None
                if isinstance(paths, list):
                    self.temp_files.handed_out(p for p in paths if isinstance(p, str))
        elif nbytes > ECHO_BYTES:
            body = json.dumps({"detail": f"Request refused (HTTP {status}); details withheld."})
            body = body.encode()
            headers = [
                (k, v)
                for k, v in start["headers"]
                if k.lower() not in (b"content-length", b"content-type", b"content-encoding")
            ]
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            start = {**start, "headers": headers}
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _refuse(self, send, status: int, text: str, extra=()):
        self.stats.count(status)
        body = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *extra,
        ]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": _with_security_headers(headers, OTHER),
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _content_length(headers) -> int | None:
    """The declared body length; None when absent (chunked), -1 when unreadable."""
    values = [v for k, v in headers if k == b"content-length"]
    if not values:
        return None
    try:
        lengths = {int(v) for v in values}
    except ValueError:
        return -1
    if len(lengths) != 1 or min(lengths) < 0:
        return -1
    return lengths.pop()


def _with_security_headers(headers, kind: str) -> list[tuple[bytes, bytes]]:
    """Our headers replace any of the same name; a file not of an inline type is an attachment."""
    ours = {name for name, _ in SECURITY_HEADERS}
    out = [(k, v) for k, v in headers if k.lower() not in ours]
    out += SECURITY_HEADERS
    if kind == FILE:
        content_type = next((v for k, v in out if k.lower() == b"content-type"), b"")
        base = content_type.split(b";")[0].strip().lower().decode("latin-1")
        if base not in INLINE_TYPES:
            out = [
                (k, v) for k, v in out if k.lower() not in (b"content-type", b"content-disposition")
            ]
            out += [
                (b"content-type", b"application/octet-stream"),
                (b"content-disposition", b"attachment"),
            ]
    return out


# -------------------------------------------------------------------------------------- logs

_error_log = logging.getLogger("flaxdigits.serve.page.guard")
_error_window = {"start": 0.0, "count": 0}
_error_lock = threading.Lock()


def _log_error(scope, error: BaseException) -> None:
    """One line per crashed request, at most ERROR_LOGS_PER_MINUTE a minute (no traceback:
    Gradio's routes crash on bodies they cannot parse, and each traceback is ~6 KB)."""
    now = time.monotonic()
    with _error_lock:
        if now - _error_window["start"] >= 60:
            dropped = _error_window["count"] - ERROR_LOGS_PER_MINUTE
            if dropped > 0:
                _error_log.warning("%d more request errors in the last minute not logged", dropped)
            _error_window.update(start=now, count=0)
        _error_window["count"] += 1
        if _error_window["count"] > ERROR_LOGS_PER_MINUTE:
            return
    path = _cut(scope.get("path", ""), 100)
    what = _cut(str(error), LOG_CHARS)
    _error_log.warning("%s %s: %s: %s", scope.get("method"), path, type(error).__name__, what)


class BoundedLogFilter(logging.Filter):
    """Cut every log message, and each line of a traceback, to LOG_CHARS characters."""

    def __init__(self, limit: int = LOG_CHARS):
        super().__init__()
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: keep its template only
            message = str(record.msg)
        record.msg, record.args = _cut(message, self.limit), ()
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = "\n".join(_cut(line, self.limit) for line in text.splitlines())
            record.exc_info = None
        return True


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit:,} more]"


def bound_logs(
    names=("uvicorn", "uvicorn.error", "uvicorn.access", "gradio", "httpx", _error_log.name),
) -> None:
    """Install BoundedLogFilter on the server's loggers and every root handler."""
    log_filter = BoundedLogFilter()
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, BoundedLogFilter) for f in logger.filters):
            logger.addFilter(log_filter)
        for handler in logger.handlers:
            if not any(isinstance(f, BoundedLogFilter) for f in handler.filters):
                handler.addFilter(log_filter)
