"""Every budget of the page's server, as named constants: what each route may take.

Body bytes per route class, request rates per client, sessions, the temp dir, the editor's pending
values, echo and log sizes, and the response headers. serve/page/guard.py enforces them in front of
every route Gradio mounts, serve/page/components.py holds the editor's store to its share, and
`flaxdigits serve --help` lists them (describe_budgets). Standard library only, plus decode's and
temp_files' own caps: importing it starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from flaxdigits.serve.page.temp_files import EVICT_AFTER_S, TEMP_DIR_BYTES
from flaxdigits.serve.runtime.decode import MAX_FILE_BYTES

KIB, MIB = 1024, 1024 * 1024

# Route classes: the page's three write routes, Gradio's file route, everything else.
UPLOAD, BLOB, JOIN, FILE, OTHER = "upload", "blob", "join", "file", "other"
API = "/gradio_api"
ROUTES = {
    f"{API}/upload": UPLOAD,
    f"{API}/component_server": BLOB,
    f"{API}/queue/join": JOIN,
}
FILE_PREFIXES = (f"{API}/file=", f"{API}/file/")

# Body bytes per request. An upload is one image at its cap plus multipart framing; a blob is
# one canvas layer (a 400x400 RGBA PNG is under 640 KB even uncompressed, a drawing ~10 KB);
# a queue join is a small JSON document naming files by path.
UPLOAD_BODY_BYTES = MAX_FILE_BYTES + 64 * KIB
BLOB_BODY_BYTES = 1 * MIB
OTHER_BODY_BYTES = 8 * KIB
BODY_BYTES = {UPLOAD: UPLOAD_BODY_BYTES, BLOB: BLOB_BODY_BYTES, JOIN: OTHER_BODY_BYTES}


@dataclass(frozen=True)
class Rate:
    """A token bucket: `burst` requests at once, refilled at `per_second`."""

    burst: int
    per_second: float


# Per client address. Generous: one address may be a whole office behind NAT (or `make
# loadtest`'s 200 clients on loopback); a single flooding client is held to the refill rate.
RATES = {
    UPLOAD: Rate(burst=240, per_second=30.0),
    BLOB: Rate(burst=600, per_second=60.0),
    JOIN: Rate(burst=240, per_second=30.0),
}
CLIENT_STATE = "flaxdigits_client"  # request.state attribute: the address the guard resolved
MAX_CLIENTS = 4096  # buckets kept; the least recently seen client's is dropped first

# Sessions Gradio keeps state for (gr.State, updated components); a request naming a new session
# hash creates one, so a flood of made-up hashes is held to this many, oldest dropped first.
SESSIONS = 500  # each is ~40 KB (a config per component): ~20 MB at most

ECHO_BYTES = 512  # longest error body passed on as it is (FastAPI's 422 echoes the request)
HOLD_BYTES = 1 * MIB  # most of a held response kept in memory (an upload's list of paths)
ERROR_LOGS_PER_MINUTE = 60  # crash lines logged; past it, one line says how many were not
LOG_CHARS = 300  # longest log message; tracebacks are cut line by line to the same

# Inline is allowed for what the page shows: the canvas, its steps, uploaded digits.
INLINE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp")

# Gradio's page needs inline scripts (its config) and styles, blob: and data: images (the
# canvas), blob: workers (the editor's renderer) and fetch/SSE to itself; nothing else.
# 'unsafe-eval' too: without it the drawn strokes never reach the server (the browser test
# times out waiting for an answer).
CSP = (
    "default-src 'self'; "
    "script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; "
    "font-src 'self' data:; "
    "connect-src 'self'; "
    "worker-src 'self' blob:; "
    "media-src 'self' blob: data:; "
    "object-src 'none'; "
    "base-uri 'self'; "
    "form-action 'self'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", CSP.encode()),
]

# The editor's pending values (serve/page/components.py's BlobStore).
EDITOR_LAYERS = 1  # the page's canvas has one drawing layer (layers=False): index 0
BLOB_TTL_S = 120.0  # a value's blobs wait this long for its prediction (queue waits included)
STORE_BYTES = 4 * MIB  # all pending editor values together (a drawing's blobs: ~10-30 KB)
STORE_ENTRIES = 512  # pending editor values, all clients together
CLIENT_BYTES = 1 * MIB  # pending editor values of one client address
ID_CHARS = 64  # the browser's ids are ~11 characters
BLOB_KINDS = ("background", "composite", "layer")

EDITOR_BUDGETS = {  # listed with BUDGETS
    "editor: layers": f"index 0..{EDITOR_LAYERS - 1}",
    "editor: pending values": (
        f"{STORE_ENTRIES} / {STORE_BYTES:,} bytes in all, {CLIENT_BYTES:,} bytes per client, "
        f"{BLOB_TTL_S:g} s each (oldest evicted first)"
    ),
}


BUDGETS = {
    "body: upload": f"{UPLOAD_BODY_BYTES:,} bytes (one {MAX_FILE_BYTES:,}-byte image + framing)",
    "body: editor blob (component_server)": f"{BLOB_BODY_BYTES:,} bytes",
    "body: queue join, every other route": f"{OTHER_BODY_BYTES:,} bytes",
    **{
        f"rate: {what} per client": f"{r.burst} at once, then {r.per_second:g}/s"
        for what, r in (
            ("uploads", RATES[UPLOAD]),
            ("editor blobs", RATES[BLOB]),
            ("queue joins", RATES[JOIN]),
        )
    },
    "sessions kept": f"{SESSIONS:,} (oldest dropped first)",
    "temp dir": f"{TEMP_DIR_BYTES:,} bytes (unused uploads evicted after {EVICT_AFTER_S:g} s)",
    "error echo / log line": f"{ECHO_BYTES} bytes / {LOG_CHARS} characters",
}


def describe_budgets() -> str:
    """The budgets as lines for `flaxdigits serve --help` and the page."""
    rows = {**BUDGETS, **EDITOR_BUDGETS}
    return "\n".join(f"  {name}: {value}" for name, value in rows.items())


def route_class(path: str) -> str:
    """Which budget a request path falls under."""
    if path.startswith(FILE_PREFIXES):
        return FILE
    return ROUTES.get(path.rstrip("/"), OTHER)
