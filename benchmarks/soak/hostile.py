"""Hostile clients: issue 18's and issue 34's requests, mixed by weight, each from one of 64
rotating addresses (one client only floods queue joins from one address)."""

from __future__ import annotations

import itertools
import json
import os
import random
import socket

from benchmarks.soak.wire import (
    UPGRADE,
    file_data,
    multipart,
    page_config,
    png_bytes,
    raw_request,
    send_then_body,
    sketch_and_stroke,
    status_of,
)

HTML = b"<html><script>alert(1)</script></html>"
MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}
JSON = {"Content-Type": "application/json"}
BIG_FIELD_EVERY = 200  # every 200th request of a mixing client: a streamed 12 MB form field

# Each kind's weight in the mix.
KINDS_18 = {
    "huge_index": 2,
    "abandoned": 3,
    "forty_9mb": 1,
    "html_upload": 1,
    "big_join": 2,
    "flood": 6,
    "junk": 2,
}
KINDS_34 = {
    "unread_upload": 1,  # 1: a 1 MiB upload nothing reads
    "empty_parts": 1,  # 2: 200 empty file parts in one upload
    "other_field": 1,  # 2: a file in a field Gradio does not read
    "unknown_stream": 2,  # 3: the event stream of a made-up session
    "upgrade": 1,  # 3 and 8: a websocket handshake (a warning per request in uvicorn)
    "bad_value": 1,  # 3: an editor value Gradio's data model refuses (a printed traceback)
    "tiny_blobs": 1,  # 4: 20 one-byte blobs with fresh ids
    "path_layers": 1,  # 5: an editor value of 20 path layers of a 4096x4096 PNG
    "te_and_cl": 1,  # 6: Content-Length: 1 beside Transfer-Encoding: chunked
    "ipv6_64": 2,  # 7: an upload from another address of one IPv6 /64
}
REQUESTS_PER_KIND = {"html_upload": 2, "tiny_blobs": 20, "path_layers": 2}


def hostile_target(url: str) -> dict:
    """What the hostile requests aim at: the canvas's id, its stroke event, a 4096x4096 PNG."""
    from PIL import Image

    sketch, stroke = sketch_and_stroke(page_config(url))
    return {"sketch": sketch, "stroke": stroke, "big_png": png_bytes(Image.new("1", (4096, 4096)))}


def pick(rng, seed: int, n: int) -> str:
    """The kind of the client's nth request."""
    if seed == 1:  # the first hostile client only floods queue joins from one address
        return "flood"
    if n % BIG_FIELD_EVERY == BIG_FIELD_EVERY - 1:
        return "big_field"
    return rng.choices([*KINDS_18, *KINDS_34], [*KINDS_18.values(), *KINDS_34.values()])[0]


def hostile_client(url, port, target, seed, stop, counter, out):
    """Issue 18's and 34's hostile requests, mixed, each from a rotating address; outcomes."""
    import httpx

    rng = random.Random(seed)  # noqa: S311 - a seeded simulation, not a secret
    addresses = [f"10.{seed}.{i // 256}.{i % 256}" for i in range(64)]
    flooder = f"10.{seed}.255.1"  # one address sending joins as fast as it can
    with httpx.Client(base_url=url, timeout=60) as http:
        for n in itertools.count():
            if stop():
                return
            kind = pick(rng, seed, n)
            address = flooder if kind in ("flood", "tiny_blobs") else rng.choice(addresses)
            if kind == "ipv6_64":
                address = f"2001:db8:{seed}:34::{rng.getrandbits(16):x}"
            headers = {"X-Forwarded-For": address}
            try:
                if kind in KINDS_34:
                    status = ISSUE_34[kind](http, port, target, headers, rng)
                else:
                    form = blob_form(target["sketch"], rng)
                    status = ISSUE_18[kind](http, port, form, headers, rng)
            except (httpx.TransportError, OSError) as e:
                status = f"{type(e).__name__}"
            out.append((kind, status))
            counter.add(REQUESTS_PER_KIND.get(kind, 1))


def blob_form(component: int, rng) -> dict:
    """The form fields of an editor blob with a fresh session and value id."""
    return {
        "component_id": str(component),
        "session_hash": f"{rng.getrandbits(40):x}",
        "fn_name": "accept_blobs",
        "id": f"{rng.getrandbits(48):x}",
        "type": "layer",
        "index": "0",
    }


# ------------------------------------------------------------------------------- issue 18


def huge_index(http, port, form, headers, rng):
    files = {"file": ("layer_0.png", os.urandom(1000), "image/png")}
    form = {**form, "index": "20000000"}
    return http.post(
        "/gradio_api/component_server", data=form, files=files, headers=headers
    ).status_code


def abandoned(http, port, form, headers, rng):
    files = {"file": ("layer_0.png", os.urandom(100_000), "image/png")}
    return http.post(
        "/gradio_api/component_server", data=form, files=files, headers=headers
    ).status_code


def forty_9mb(http, port, form, headers, rng):
    """An upload declaring 40 x 9 MB: the answer is read before any of it is sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\n"
            + f"X-Forwarded-For: {headers['X-Forwarded-For']}\r\n".encode()
            + b"Content-Type: multipart/form-data; boundary=b\r\n"
            + f"Content-Length: {40 * 9 * 1024 * 1024}\r\n\r\n--b\r\n".encode()
        )
        return int(s.recv(64).split(b" ")[1])


def html_upload(http, port, form, headers, rng):
    """HTML uploaded as x.png, fetched back: served as a PNG with nosniff?"""
    r = http.post(
        "/gradio_api/upload", files={"files": ("x.png", HTML, "image/png")}, headers=headers
    )
    if r.status_code != 200:
        return r.status_code
    f = http.get(f"/gradio_api/file={r.json()[0]}", headers=headers)
    ok = (
        f.headers.get("x-content-type-options") == "nosniff"
        and f.headers.get("content-type") == "image/png"
    )
    return f.status_code if ok else "served without nosniff"


def big_join(http, port, form, headers, rng):
    body = json.dumps({"data": ["A" * 100_000], "fn_index": 0, "session_hash": "x"})
    return http.post(
        "/gradio_api/queue/join", content=body, headers={**headers, **JSON}
    ).status_code


def flood(http, port, form, headers, rng):
    return http.post(
        "/gradio_api/queue/join", content=b"{}", headers={**headers, **JSON}
    ).status_code


def junk(http, port, form, headers, rng):
    body = os.urandom(rng.randrange(1, 20_000))
    return http.post("/gradio_api/reset", content=body, headers=headers).status_code


def big_field(http, port, form, headers, rng):
    """An upload whose only part is a 12 MB form field, streamed."""

    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="field"\r\n\r\n'
        for _ in range(12):
            yield b"x" * (1 << 20)
        yield b"\r\n--b--\r\n"

    return http.post(
        "/gradio_api/upload", content=body(), headers={**headers, **MULTIPART}
    ).status_code


ISSUE_18 = {
    f.__name__: f
    for f in (huge_index, abandoned, forty_9mb, html_upload, big_join, flood, junk, big_field)
}


# ------------------------------------------------------------------------------- issue 34


def upload(http, port, target, headers, rng, data: bytes = b""):
    """1 (1 MiB nothing reads) and 7 (empty, from another address of one IPv6 /64)."""
    files = {"files": ("u.png", data, "image/png")}
    return http.post("/gradio_api/upload", files=files, headers=headers).status_code


def unread_upload(http, port, target, headers, rng):
    return upload(http, port, target, headers, rng, os.urandom(1 << 20))


def empty_parts(http, port, target, headers, rng):
    parts = [("files", f"e{i}.png", b"") for i in range(200)]
    return http.post(
        "/gradio_api/upload", content=multipart(parts), headers={**headers, **MULTIPART}
    ).status_code


def other_field(http, port, target, headers, rng):
    parts = [("other", "o.png", os.urandom(1000))]
    return http.post(
        "/gradio_api/upload", content=multipart(parts), headers={**headers, **MULTIPART}
    ).status_code


def unknown_stream(http, port, target, headers, rng):
    url = f"/gradio_api/queue/data?session_hash={rng.getrandbits(40):x}"
    return http.get(url, headers=headers).status_code


def upgrade(http, port, target, headers, rng):
    return status_of(raw_request(port, UPGRADE))


def te_and_cl(http, port, target, headers, rng):
    """An upload framed chunked beside Content-Length: 1."""
    body = multipart([("files", "s.png", os.urandom(5000))])
    head = (
        b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        + f"X-Forwarded-For: {headers['X-Forwarded-For']}\r\n\r\n".encode()
    )
    return status_of(send_then_body(port, head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)))


def tiny_blobs(http, port, target, headers, rng):
    """20 one-byte blobs with fresh value ids; the most common status."""
    codes = []
    for _ in range(20):
        form = {
            "component_id": str(target["sketch"]),
            "session_hash": "tinyblobs",
            "fn_name": "accept_blobs",
            "id": f"{rng.getrandbits(48):x}",
            "type": "layer",
            "index": "0",
        }
        files = {"file": ("layer_0.png", b"x", "image/png")}
        r = http.post("/gradio_api/component_server", data=form, files=files, headers=headers)
        codes.append(r.status_code)
    return max(set(codes), key=codes.count)


def editor_attack(http, port, target, headers, rng, layers: int = 0):
    """A queue join of an editor value: 20 path layers of a 4096x4096 PNG, or a refused value."""
    value = {"background": {"path": "x.png"}, "layers": [], "composite": None, "id": None}
    if layers:
        files = {"files": ("b.png", target["big_png"], "image/png")}
        r = http.post("/gradio_api/upload", files=files, headers=headers)
        if r.status_code != 200:
            return f"upload {r.status_code}"
        layer = file_data(r.json()[0])
        value = {"background": layer, "layers": [layer] * layers, "composite": None, "id": None}
    body = {
        "data": ["draw", value, "mnist"],
        "fn_index": target["stroke"],
        "session_hash": f"{rng.getrandbits(40):x}",
        "trigger_id": target["sketch"],
    }
    return http.post(
        "/gradio_api/queue/join",
        content=json.dumps(body, separators=(",", ":")),
        headers={**headers, **JSON},
    ).status_code


def path_layers(http, port, target, headers, rng):
    return editor_attack(http, port, target, headers, rng, layers=20)


ISSUE_34 = {
    "unread_upload": unread_upload,
    "empty_parts": empty_parts,
    "other_field": other_field,
    "unknown_stream": unknown_stream,
    "upgrade": upgrade,
    "bad_value": editor_attack,
    "tiny_blobs": tiny_blobs,
    "path_layers": path_layers,
    "te_and_cl": te_and_cl,
    "ipv6_64": upload,
}
