"""The guard in front of every route the page's server mounts: bodies, rates, disk and headers.

Gradio mounts some forty routes beside /predict (uploads, the editor's blob store, the queue and
its event streams, files, login, ...). This ASGI layer sits in front of all of them and holds each
request to a budget before Gradio reads a byte of it:

- **Scopes**: HTTP only (and the server's lifespan); a websocket is closed unanswered (403), any
  other kind of scope ends at once.
- **Framing**: a Content-Length that is not one number, or any Transfer-Encoding beside a
  Content-Length or other than plain `chunked`, is a 400 (behind a proxy that frames by length,
  such a pair is request smuggling).
- **Bodies** are counted as they stream in, chunked ones included: past the route's budget the
  request ends with 413 (a too-large declared length is refused before anything is read).
  Multipart bodies are read alongside Gradio by the parser Gradio itself uses: past the route's
  number of parts, 413; an upload's file in any field but the one Gradio reads, 400.
- **Rates**: uploads, editor blobs, queue joins and event streams take a token from the client's
  bucket, or get 429. The client is the peer address (an IPv6 one by its /64, an IPv4-mapped one
  as IPv4); X-Forwarded-For is read only from a configured proxy.
- **Disk**: an upload first reserves room in the temp dir's budget, in all and for its client
  (chunked: the route's whole budget), else 507; each path it hands out is a lease that a queue
  join naming it extends (TempFiles, in serve/page/temp_files.py).
- **Headers**: nosniff, a Content-Security-Policy, Referrer-Policy on every response; files are
  served inline only as the image types the page shows, anything else as an attachment.
- **Echoes and logs**: an error response longer than ECHO_BYTES (FastAPI's 422 repeats the
  request) is cut to a short message; a route that crashes gets a clean 400/500 and one capped log
  line, and one that crashes after its answer started is ended there, never re-raised (the server
  would log a traceback per request); BoundedLogFilter holds every logger the server uses to
  LOG_RECORDS_PER_MINUTE short records, BoundedStream its stderr to STDERR_LINES_PER_MINUTE
  lines (Gradio prints a traceback per failed event there, past any logger).

Every budget is a named constant in serve/page/budgets.py (BUDGETS lists them for `flaxdigits serve
--help`). Standard library, python-multipart (the parser Gradio reads multipart bodies with, so
both see the same parts), the budgets and TempFiles: importing it starts nothing.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.formparsers import _user_safe_decode

from flaxdigits.serve.page.budgets import (
    BODY_BYTES,
    CLIENT_STATE,
    ECHO_BYTES,
    ERROR_LOGS_PER_MINUTE,
    FILE,
    HOLD_BYTES,
    INLINE_TYPES,
    IPV6_PREFIX,
    JOIN,
    LOG_CHARS,
    LOG_RECORDS_PER_MINUTE,
    MAX_CLIENTS,
    MULTIPART_PARTS,
    OTHER,
    OTHER_BODY_BYTES,
    RATES,
    SECURITY_HEADERS,
    STDERR_LINES_PER_MINUTE,
    UPLOAD,
    UPLOAD_FIELD,
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
    """The client's key: the peer, or from a trusted proxy the last X-Forwarded-For hop it did
    not add; an IPv6 address as its /64 network, an IPv4-mapped one as the IPv4 address."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if peer not in trusted_proxies:
        return client_key(peer)
    forwarded = [
        value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"
    ]
    hops = [h.strip() for h in ",".join(forwarded).split(",") if h.strip()]
    for hop in reversed(hops):  # the right-most hops are the ones our proxies wrote
        if hop in trusted_proxies:
            continue
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return client_key(peer)  # a hop that is no address: the chain cannot be trusted past it
        return client_key(hop)
    return client_key(peer)


def client_key(address: str) -> str:
    """One key per client: IPv4 as is, IPv4-mapped IPv6 as its IPv4, other IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no zone index: one host, one key
    except ValueError:
        return address  # not an address (a unix socket, "unknown"): its own key
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False))
    return str(ip)


# ------------------------------------------------------------------------------ multipart


class PartsScan:
    """A multipart body read as Gradio reads it (python-multipart, Gradio's charset rule), to
    refuse it as soon as it has too many parts or a file outside the field Gradio reads."""

    def __init__(self, content_type: bytes, max_parts: int, file_field: str | None):
        _, params = parse_options_header(content_type)
        charset = params.get(b"charset", b"utf-8")
        self.charset = charset.decode("latin-1") if isinstance(charset, bytes) else charset
        self.max_parts, self.file_field = max_parts, file_field
        self.parts = 0
        self.problem: tuple[int, str] | None = None
        self._name, self._value, self._disposition = b"", b"", b""
        self._parser = None
        boundary = params.get(b"boundary")
        if boundary:  # without one, Gradio refuses the body itself
            self._parser = MultipartParser(
                boundary,
                {
                    "on_part_begin": self._part_begin,
                    "on_header_field": self._header_field,
                    "on_header_value": self._header_value,
                    "on_header_end": self._header_end,
                    "on_headers_finished": self._headers_finished,
                },
            )

    def feed(self, chunk: bytes) -> None:
        """Read the next bytes; sets .problem (status, reason) when the body is to be refused."""
        if self._parser is None or self.problem is not None:
            return
        try:
            self._parser.write(chunk)
        except MultipartParseError as e:  # Gradio's parser fails the same way: refused here
            self.problem = (400, f"Malformed multipart body: {e}")

    def _part_begin(self) -> None:
        self.parts += 1
        self._disposition = b""
        if self.parts > self.max_parts:
            self.problem = (413, f"Too many parts: this route takes at most {self.max_parts}.")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]  # python-multipart stops a header past 8 KiB itself

    def _header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self._disposition = self._value
        self._name, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = _user_safe_decode(options.get(b"name", b""), self.charset)
        if self.file_field is not None and b"filename" in options and name != self.file_field:
            self.problem = (400, f"Send files in the `{self.file_field}` field only.")


# ------------------------------------------------------------------------------------ the guard


@dataclass
class Stats:
    """Refusals by status, for tests and the soak benchmark."""

    refused: dict[int, int] = field(default_factory=dict)

    def count(self, status: int) -> None:
        self.refused[status] = self.refused.get(status, 0) + 1


class Guard:
    """ASGI middleware: scopes, framing, bodies and parts, rates, disk, headers (module doc)."""

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
        if scope["type"] == "http":
            await Exchange(self, scope).run(receive, send)
        elif scope["type"] == "lifespan":
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":  # the page has none: refused before it is accepted
            self.stats.count(403)
            try:
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": 1008})  # the server answers 403
            except OSError:
                pass
        else:  # a kind of scope this guard does not know: nothing reaches the app
            self.stats.count(0)


class Exchange:
    """One HTTP request through the guard and its answer: the per-request state and its steps
    (the shape of Starlette's own GZipResponder)."""

    def __init__(self, guard: Guard, scope):
        self.guard, self.scope = guard, scope
        self.kind = route_class(scope["path"])
        self.budget = guard.body_bytes.get(self.kind, OTHER_BODY_BYTES)
        self.client = client_address(scope, guard.trusted_proxies)
        self.temp_files = guard.temp_files if self.kind == UPLOAD else None
        self.received = 0
        self.refusal: tuple[int, str] | None = None  # ours, decided mid-body: the app is cut off
        self.status = 0
        self.started = False  # the answer's start reached the client
        self.finished = False  # ... and its last byte
        self.held_start = None  # an answer held back: an upload's paths, or an error to cut
        self.held_body: list[bytes] = []
        self.held_bytes = 0
        self.ticket: int | None = None
        self.join_body = bytearray() if self.kind == JOIN else None
        self.parts = self._parts_scan()

    def _parts_scan(self) -> PartsScan | None:
        limit = MULTIPART_PARTS.get(self.kind)
        content_type = _header(self.scope["headers"], b"content-type") or b""
        if limit is None or not content_type.lower().startswith(b"multipart/"):
            return None
        return PartsScan(content_type, limit, UPLOAD_FIELD if self.kind == UPLOAD else None)

    async def run(self, receive, send):
        refusal = self.check()
        if refusal is not None:
            await self.refuse(send, *refusal)
            return
        try:
            await self.forward(receive, send)
        finally:
            if self.ticket is not None:
                clean = self.status == 200 and self.refusal is None and self.finished
                self.temp_files.finish(self.ticket, clean)

    def check(self):
        """Refusals before the body: (status, text[, extra headers]) or None."""
        headers, scope = self.scope["headers"], self.scope
        declared = _content_length(headers)
        if declared == -1:
            return 400, "Bad Content-Length."
        if not _plain_framing(headers, declared):
            return 400, "Transfer-Encoding must be chunked alone, without a Content-Length."
        if len([v for k, v in headers if k == b"content-type"]) > 1:
            return 400, "More than one Content-Type."
        if declared is not None and declared > self.budget:
            return 413, f"Request body over this route's {self.budget:,}-byte budget."
        if isinstance(scope.get("state"), dict):  # Starlette's request.state, per request
            scope["state"][CLIENT_STATE] = self.client
        wait = self.guard.limiter.take(self.kind, self.client)
        if wait:
            retry = [(b"retry-after", str(max(1, round(wait))).encode())]
            return 429, "Too many requests from this address: slow down.", retry
        if self.temp_files is not None:
            nbytes = declared if declared is not None else self.budget  # chunked: all of it
            self.ticket = self.temp_files.reserve(nbytes, MULTIPART_PARTS[UPLOAD], self.client)
            if self.ticket is None:
                return 507, "The server's upload space is full (or this address's share): later."
        return None

    async def forward(self, receive, send):
        """Run the app with the counted receive and the guarded send; a crash ends cleanly."""
        try:
            await self.guard.app(
                self.scope,
                functools.partial(self.receive, receive),
                functools.partial(self.send, send=send),
            )
        except Exception as e:
            if self.refusal is None:  # a crash in a route: one short log line, a clean end
                _log_error(self.scope, e)
                code = 400 if isinstance(e, UnicodeDecodeError) else 500
                self.refusal = (code, "Bad request." if code == 400 else "Server error.")
        if self.refusal is not None and not self.started:
            await self.refuse(send, *self.refusal)
        else:
            await self.end(send)

    async def receive(self, receive):
        """The app's receive: bodies counted, multipart parts scanned; refused: a disconnect."""
        if self.refusal is not None:
            return {"type": "http.disconnect"}
        message = await receive()
        if message["type"] != "http.request":
            return message
        chunk = message.get("body", b"")
        self.received += len(chunk)
        if self.received > self.budget:
            self.refusal = (413, f"Request body over this route's {self.budget:,}-byte budget.")
        elif self.parts is not None:
            self.parts.feed(chunk)
            self.refusal = self.parts.problem
        if self.refusal is not None:
            return {"type": "http.disconnect"}  # the app sees a client that went away
        if self.join_body is not None:
            self.join_body += chunk  # within the route's budget: a queue join's paths are claimed
        return message

    async def send(self, message, send):
        """The app's send: our headers added; an upload's paths and error bodies held back."""
        if self.refusal is not None:
            return
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = _with_security_headers(message.get("headers", []), self.kind)
            message = {**message, "headers": headers}
            if self.join_body is not None and self.status == 200 and self.guard.temp_files:
                self.guard.temp_files.claim(_paths_in(self.join_body))  # before the event runs
            uploaded = self.temp_files is not None and self.status == 200
            if uploaded or 400 <= self.status < 500:
                self.held_start = message
                return
        elif message["type"] == "http.response.body" and self.held_start is not None:
            chunk = message.get("body", b"")
            if self.held_bytes + len(chunk) <= HOLD_BYTES:
                self.held_body.append(chunk)
            self.held_bytes += len(chunk)  # past HOLD_BYTES only counted: it will be replaced
            if message.get("more_body", False):
                return
            start, self.held_start = self.held_start, None
            await self.flush(start, b"".join(self.held_body), send)
            return
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        self.started = True
        await send(message)

    async def flush(self, start, body: bytes, send):
        """Send a held answer: an upload's paths become leases; a long error body is cut."""
        if self.temp_files is not None and self.status == 200:
            paths = _json_list(body) if self.held_bytes == len(body) else None
            if paths is None:  # not the list of paths Gradio answers: nothing is handed out
                self.refusal = (500, "Server error.")
                await self.refuse(send, *self.refusal)
                return
            self.temp_files.handed_out(paths, self.client)
        elif self.held_bytes > ECHO_BYTES:
            body = json.dumps(
                {"detail": f"Request refused (HTTP {self.status}); details withheld."}
            ).encode()
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
        self.started = self.finished = True
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def end(self, send):
        """After the app: an answer it left unfinished (a crash mid-answer) is ended where it
        stands, never re-raised: the server would log a traceback per request."""
        if self.started and not self.finished:
            self.finished = True
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except Exception:  # noqa: BLE001, S110 - a declared length cut short: the server closes
                pass

    async def refuse(self, send, status: int, text: str, extra=()):
        """Our own short answer, with the security headers; the connection is closed after it."""
        self.guard.stats.count(status)
        body = text.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *extra,
        ]
        start = {
            "type": "http.response.start",
            "status": status,
            "headers": _with_security_headers(headers, OTHER),
        }
        self.status, self.started, self.finished = status, True, True
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _header(headers, name: bytes) -> bytes | None:
    return next((v for k, v in headers if k == name), None)


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


def _plain_framing(headers, declared: int | None) -> bool:
    """No Transfer-Encoding, or exactly `chunked` and no Content-Length."""
    codings = [v for k, v in headers if k == b"transfer-encoding"]
    if not codings:
        return True
    return declared is None and [c.strip().lower() for c in codings] == [b"chunked"]


def _json_list(body: bytes) -> list[str] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        return None
    return value


def _paths_in(body: bytes) -> list[str]:
    """The file paths a queue join names: every "path" string of a JSON object in it."""
    try:
        stack = [json.loads(body)]
    except (ValueError, RecursionError):
        return []
    paths = []
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            if isinstance(value.get("path"), str):
                paths.append(value["path"])
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return paths


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
    """At most per_minute records a minute (all loggers it is on, together), each cut to `limit`
    characters with its traceback reduced to one line; the first record of a minute says how
    many the last one dropped."""

    def __init__(self, limit: int = LOG_CHARS, per_minute: int = LOG_RECORDS_PER_MINUTE):
        super().__init__()
        self.limit, self.per_minute = limit, per_minute
        self._window, self._count, self._dropped = 0.0, 0, 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "flaxdigits_kept", None)
        if decided is not None:  # seen by another handler of ours already
            return decided
        with self._lock:
            if record.created - self._window >= 60:
                self._window, self._count, dropped = record.created, 0, self._dropped
                self._dropped = 0
            else:
                dropped = 0
            self._count += 1
            kept = self._count <= self.per_minute
            self._dropped += not kept
        record.flaxdigits_kept = kept
        if kept:
            self._shorten(record, dropped)
        return kept

    def _shorten(self, record: logging.LogRecord, dropped: int) -> None:
        if record.name == "uvicorn.access":  # its formatter reads the arguments themselves
            return
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: keep its template only
            message = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message} [{type(error).__name__}: {error}]"
        if dropped:
            message = f"[{dropped:,} log records not written in the last minute] {message}"
        record.msg, record.args = _cut(" | ".join(message.splitlines()), self.limit), ()
        record.exc_info = record.exc_text = record.stack_info = None


class BoundedStream(io.TextIOBase):
    """A text stream passing at most per_minute lines a minute to `stream`, each cut to `limit`
    characters: Gradio prints a traceback per failed event straight to stderr, past any logger.
    The first line of a minute says how many the last one dropped."""

    def __init__(self, stream, limit: int = LOG_CHARS, per_minute: int = STDERR_LINES_PER_MINUTE):
        super().__init__()
        self.stream, self.limit, self.per_minute = stream, limit, per_minute
        self._partial = ""
        self._window, self._count, self._dropped = 0.0, 0, 0
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            if len(self._partial) > self.limit:  # no newline for long: a line of its own
                lines.append(self._partial)
                self._partial = ""
            for line in lines:
                self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        now = time.monotonic()
        if now - self._window >= 60:
            if self._dropped:
                self.stream.write(f"[{self._dropped:,} lines not written in the last minute]\n")
            self._window, self._count, self._dropped = now, 0, 0
        self._count += 1
        if self._count > self.per_minute:
            self._dropped += 1
            return
        self.stream.write(_cut(line, self.limit) + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit:,} more]"


SERVER_LOGGERS = (
    "",  # the root: Gradio's and anything else's records end up at its handlers
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "gradio",
    "httpx",
    "asyncio",
    _error_log.name,
)


def bound_logs(names=SERVER_LOGGERS) -> BoundedLogFilter:
    """Install one BoundedLogFilter on the server's loggers, their handlers and Python's last-resort
    handler (call it once the server has configured its logging: uvicorn replaces handlers)."""
    log_filter = next(
        (f for f in logging.getLogger(names[0]).filters if isinstance(f, BoundedLogFilter)),
        BoundedLogFilter(),
    )
    targets = [logging.lastResort] if logging.lastResort is not None else []
    for name in names:
        logger = logging.getLogger(name)
        targets += [logger, *logger.handlers]
    for target in targets:
        if not any(isinstance(f, BoundedLogFilter) for f in target.filters):
            target.addFilter(log_filter)
    return log_filter
