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
  would log a traceback per request); serve/page/logs.py holds every logger the server uses,
  and its stderr, to a few short records a minute.

Every budget is a named constant in serve/page/budgets.py (BUDGETS lists them for `flaxdigits serve
--help`). Who a client is and its rate: clients.py; multipart parts as Gradio reads them:
multipart.py; the temp dir's leases: temp_files.py. Importing it starts nothing.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from flaxdigits.serve.page.budgets import (
    BODY_BYTES,
    CLIENT_STATE,
    ECHO_BYTES,
    FILE,
    HOLD_BYTES,
    INLINE_TYPES,
    JOIN,
    MULTIPART_PARTS,
    OTHER,
    OTHER_BODY_BYTES,
    SECURITY_HEADERS,
    UPLOAD,
    UPLOAD_FIELD,
    route_class,
)
from flaxdigits.serve.page.clients import RateLimiter, client_address
from flaxdigits.serve.page.logs import log_error
from flaxdigits.serve.page.multipart import PartsScan
from flaxdigits.serve.page.temp_files import TempFiles


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
                log_error(self.scope, e)
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
