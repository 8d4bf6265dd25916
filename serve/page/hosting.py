"""Which address the page binds: --host/--port, else GRADIO_SERVER_NAME/GRADIO_SERVER_PORT (what
Hugging Face Spaces and Gradio's own docs set), else 127.0.0.1:7860; any address but loopback
comes with one warning line.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
HOST_ENV, PORT_ENV = "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"


class HostingError(ValueError):
    """A bad address or port; the message says why."""


def bind(
    host: str | None, port: int | None, environ: Mapping[str, str] = os.environ
) -> tuple[str, int, str | None]:
    """(host, port, warning): flags win over the environment, which wins over 127.0.0.1:7860;
    the warning is one line when the address is reachable from other machines, else None."""
    host = host or environ.get(HOST_ENV) or DEFAULT_HOST
    if port is None:
        raw = environ.get(PORT_ENV)
        try:
            port = int(raw) if raw else DEFAULT_PORT
        except ValueError:
            raise HostingError(f"{PORT_ENV}={raw!r} is not a port number") from None
    if not 0 < port < 65536:
        raise HostingError(f"port {port} is outside 1-65535")
    warning = None
    if not is_loopback(host):
        warning = (
            f"warning: serving on {host}:{port}: the page is reachable from the network, "
            "not only this machine"
        )
    return host, port, warning


def is_loopback(host: str) -> bool:
    """True for localhost and 127.0.0.0/8 or ::1 addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
