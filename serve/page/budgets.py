"""Every budget of the page's server, as named constants: what each route may take.

Body bytes and multipart parts per route class, request rates per client, sessions, the temp
dir (bytes and files, in all and per client; upload leases), the editor's pending values, echo and
log sizes, and the response headers. serve/page/guard.py enforces them in front of
every route Gradio mounts, serve/page/components.py holds the editor's store to its share, and
`flaxdigits serve --help` lists them (describe_budgets). Standard library only, plus decode's and
temp_files' own caps: importing it starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from flaxdigits.serve.page.temp_files import (
    CLAIM_S,
    CLIENT_DISK_BYTES,
    CLIENT_FILES,
    FILE_CHARGE,
    LEASE_S,
    RELEASE_GRACE_S,
    TEMP_DIR_BYTES,
    TEMP_DIR_FILES,
    UPLOAD_KEEP_S,
)
from flaxdigits.serve.runtime.decode import MAX_FILE_BYTES

KIB, MIB = 1024, 1024 * 1024

# Route classes: the page's three write routes, the event streams (server-sent events),
# Gradio's file route, everything else.
UPLOAD, BLOB, JOIN, SSE, FILE, OTHER = "upload", "blob", "join", "sse", "file", "other"
API = "/gradio_api"
ROUTES = {
    f"{API}/upload": UPLOAD,
    f"{API}/component_server": BLOB,
    f"{API}/queue/join": JOIN,
    f"{API}/queue/data": SSE,
    f"{API}/upload_progress": SSE,
}
SSE_PREFIXES = (f"{API}/heartbeat/",)
FILE_PREFIXES = (f"{API}/file=", f"{API}/file/")

# Body bytes per request. An upload is one image at its cap plus multipart framing; a blob is
# one canvas layer (a 400x400 RGBA PNG is under 640 KB even uncompressed, a drawing ~10 KB);
# a queue join is a small JSON document naming files by path.
UPLOAD_BODY_BYTES = MAX_FILE_BYTES + 64 * KIB
BLOB_BODY_BYTES = 1 * MIB
OTHER_BODY_BYTES = 8 * KIB
BODY_BYTES = {UPLOAD: UPLOAD_BODY_BYTES, BLOB: BLOB_BODY_BYTES, JOIN: OTHER_BODY_BYTES}

# Multipart parts per request (Gradio's parsers take 1,000, each file part a file on disk): the
# page's upload sends one file, its editor blob one file and five fields. An upload's file parts
# must be in the one field Gradio reads (a file in any other is left on disk by Gradio).
MULTIPART_PARTS = {UPLOAD: 4, BLOB: 10}
UPLOAD_FIELD = "files"


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
    SSE: Rate(burst=240, per_second=30.0),  # a browser opens one per event, and one heartbeat
}
CLIENT_STATE = "flaxdigits_client"  # request.state attribute: the address the guard resolved
MAX_CLIENTS = 4096  # buckets kept; the least recently seen client's is dropped first
IPV6_PREFIX = 64  # an IPv6 client is its /64 (one host is often given a whole /64)

# Sessions Gradio keeps state for (gr.State, updated components); a request naming a new session
# hash creates one, so a flood of made-up hashes is held to this many, oldest dropped first.
SESSIONS = 500  # each is ~40 KB (a config per component): ~20 MB at most
# Sessions whose events' messages wait for their event stream (a join that is never streamed
# leaves them: a page answer's messages are ~25 KB, ~50 MB at most), oldest dropped: Gradio's
# own 2,000. Not fewer: its LRU is not refreshed by use, so a flood of joins with made-up
# sessions (30 a second per address) drops an honest session still waiting for its answer
# after PENDING_SESSIONS / 30 s.
PENDING_SESSIONS = 2000

ECHO_BYTES = 512  # longest error body passed on as it is (FastAPI's 422 echoes the request)
HOLD_BYTES = 1 * MIB  # most of a held response kept in memory (an upload's list of paths)
ERROR_LOGS_PER_MINUTE = 60  # crash lines logged; past it, one line says how many were not
LOG_RECORDS_PER_MINUTE = 120  # log records of every logger together; past it, dropped and counted
STDERR_LINES_PER_MINUTE = (
    240  # lines printed to stderr (Gradio prints a traceback per failed event)
)
LOG_CHARS = 300  # longest log message; a traceback becomes one line of its last exception

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
CLIENT_ENTRIES = 4  # pending editor values of one client address (a browser has one at a time)
ENTRY_CHARGE = 16 * KIB  # the least a pending value is charged: a drawing's blobs are ~10-30 KB
ID_CHARS = 64  # the browser's ids are ~11 characters
BLOB_KINDS = ("background", "composite", "layer")
EDITOR_MAX_SIDE = 2048  # an editor image's side: the 400x400 canvas, even at 4x screen density

EDITOR_BUDGETS = {  # listed with BUDGETS
    "editor: layers": f"index 0..{EDITOR_LAYERS - 1}, blobs or paths alike",
    "editor: image side": f"{EDITOR_MAX_SIDE:,} px, blobs or paths alike",
    "editor: pending values": (
        f"{STORE_ENTRIES} / {STORE_BYTES:,} bytes in all; {CLIENT_ENTRIES} / {CLIENT_BYTES:,} "
        f"bytes per client; each charged at least {ENTRY_CHARGE:,} bytes; {BLOB_TTL_S:g} s each "
        "(the heaviest client's oldest evicted first)"
    ),
}


BUDGETS = {
    "body: upload": f"{UPLOAD_BODY_BYTES:,} bytes (one {MAX_FILE_BYTES:,}-byte image + framing)",
    "body: editor blob (component_server)": f"{BLOB_BODY_BYTES:,} bytes",
    "body: queue join, every other route": f"{OTHER_BODY_BYTES:,} bytes",
    "multipart parts per request: upload / editor blob": (
        f"{MULTIPART_PARTS[UPLOAD]} / {MULTIPART_PARTS[BLOB]} (an upload's files in the "
        f"`{UPLOAD_FIELD}` field only)"
    ),
    **{
        f"rate: {what} per client": f"{r.burst} at once, then {r.per_second:g}/s"
        for what, r in (
            ("uploads", RATES[UPLOAD]),
            ("editor blobs", RATES[BLOB]),
            ("queue joins", RATES[JOIN]),
            ("event streams", RATES[SSE]),
        )
    },
    "client": f"the peer address; IPv6 by its /{IPV6_PREFIX}, IPv4-mapped as IPv4",
    "sessions kept; with answers waiting for their stream": (
        f"{SESSIONS:,}; {PENDING_SESSIONS:,} (oldest dropped first)"
    ),
    "temp dir": f"{TEMP_DIR_BYTES:,} bytes / {TEMP_DIR_FILES:,} files in all",
    "temp dir per client": (
        f"{CLIENT_DISK_BYTES:,} bytes / {CLIENT_FILES:,} files; a file charged at least "
        f"{FILE_CHARGE:,} bytes"
    ),
    "upload lease": (
        f"deleted {LEASE_S:g} s after the upload unless a queue join names it ({CLAIM_S:g} s), "
        f"{RELEASE_GRACE_S:g} s after a prediction read it ({UPLOAD_KEEP_S:g} s after the "
        "page's Upload tab did: the method switch reads it again)"
    ),
    "error echo / log line": f"{ECHO_BYTES} bytes / {LOG_CHARS} characters",
    "log records / stderr lines": (
        f"{LOG_RECORDS_PER_MINUTE} / {STDERR_LINES_PER_MINUTE} a minute, every logger together"
    ),
}


def describe_budgets() -> str:
    """The budgets as lines for `flaxdigits serve --help` and the page."""
    rows = {**BUDGETS, **EDITOR_BUDGETS}
    return "\n".join(f"  {name}: {value}" for name, value in rows.items())


def route_class(path: str) -> str:
    """Which budget a request path falls under."""
    if path.startswith(FILE_PREFIXES):
        return FILE
    if path.startswith(SSE_PREFIXES):
        return SSE
    return ROUTES.get(path.rstrip("/"), OTHER)
