"""Free loopback ports for the servers that tests, benchmarks and CI start, without a bind race.

`free_port()` asks the kernel for a port nothing listens on; between that answer and the server's
own bind another process (a parallel test worker, say) can take it. `on_free_port(start)` calls
`start(port)` and, when the server reports the port taken (`PortTaken`), tries again on another.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
ATTEMPTS = 5
# What a server that lost the race prints: the OS's message (uvicorn, Gradio, Python's socket
# module), and Gradio's own when it finds no port to bind.
TAKEN_MARKERS = ("address already in use", f"[errno {errno.EADDRINUSE}]", "cannot find empty port")


class PortTaken(OSError):
    """The server could not bind its port: something else took it after free_port() chose it."""

    def __init__(self, port: int, detail: str = ""):
        super().__init__(errno.EADDRINUSE, f"port {port} was taken before the server bound it")
        self.detail = detail


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def says_port_taken(text: str) -> bool:
    """Whether a server's output or error says its port was already in use."""
    low = text.lower()
    return any(marker in low for marker in TAKEN_MARKERS)


def on_free_port(start: Callable[[int], T], attempts: int = ATTEMPTS) -> tuple[int, T]:
    """(port, start(port)) on a free port, picked again when start raises PortTaken or an
    OSError with EADDRINUSE; the last such error is raised after `attempts` tries."""
    last: OSError | None = None
    for _ in range(attempts):
        port = free_port()
        try:
            return port, start(port)
        except OSError as e:
            if not isinstance(e, PortTaken) and not (
                e.errno == errno.EADDRINUSE or says_port_taken(str(e))
            ):
                raise
            last = e
    assert last is not None
    raise last
