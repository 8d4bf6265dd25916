"""Requests as bytes: raw connections, multipart bodies, PNGs, the page's component ids, and
tallies of status codes. Shared by the hostile clients and the rows."""

from __future__ import annotations

import io
import json
import socket
import urllib.request

MIB = 1 << 20
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def page_config(url: str) -> dict:
    with urllib.request.urlopen(url + "config", timeout=30) as r:  # noqa: S310 - loopback
        return json.load(r)


def sketch_and_stroke(config: dict) -> tuple[int, int]:
    """The canvas's component id and the index of its stroke event (`input`)."""
    sketch = next(c["id"] for c in config["components"] if c["props"].get("elem_id") == "sketch")
    stroke = next(
        i for i, d in enumerate(config["dependencies"]) if d["targets"] == [[sketch, "input"]]
    )
    return sketch, stroke


def png_bytes(img) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def a_one() -> bytes:
    """A '1' as the page's canvas layer would send it: black ink on a transparent 400x400."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(200, 60), (200, 340)], fill=(0, 0, 0, 255), width=28)
    return png_bytes(img)


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "b") -> bytes:
    """A multipart/form-data body of (field name, file name, bytes) parts."""
    out = []
    for field, filename, data in parts:
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    return b"".join(out) + f"--{boundary}--\r\n".encode()


def raw_request(port: int, data: bytes, timeout: float = 30.0, size: int = 4096) -> bytes:
    """Send bytes on a fresh connection; the answer's first `size` bytes at most (b"" if it
    closed unanswered)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            return s.recv(size)
        except OSError:
            return b""


def send_then_body(port: int, head: bytes, body: bytes, timeout: float = 120.0) -> bytes:
    """Send a request's head; a server that answers at once is read before the body is sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        s.settimeout(2.0)
        try:
            reply = s.recv(4096)
        except TimeoutError:
            reply = b""
        if reply:
            return reply
        s.settimeout(timeout)
        s.sendall(body)
        return s.recv(4096)


def status_of(reply: bytes):
    try:
        return int(reply.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return "no answer"


def count(codes) -> dict:
    """{status as text: how many}."""
    out: dict[str, int] = {}
    for code in codes:
        out[str(code)] = out.get(str(code), 0) + 1
    return out


def transport_errors() -> tuple[type[BaseException], ...]:
    import httpx

    return (httpx.TransportError,)
