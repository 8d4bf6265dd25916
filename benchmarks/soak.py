"""`make soak`: honest drawings and the issue-18 hostile requests against the served page.

A fixed number of requests (default 20,000; minutes, not hours) against the page launched on
loopback with 127.0.0.1 as its trusted proxy, so every simulated client has its own address
(X-Forwarded-For). First an honest-only phase (the latency baseline), then honest clients beside
hostile ones. Samples the server's RSS, open file descriptors and temp-dir bytes every second;
writes a JSON summary and a plot.

    python benchmarks/soak.py --models models --requests 20000 --out benchmarks/soak.json

Checks: RSS slope after warm-up under 1 MB per 1,000 requests, the temp dir never over its
budget, no wrong answer to an honest client, honest p95 within 2x of the honest-only phase.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from benchmarks import loadtest  # the sibling benchmark's drawings, answers and RSS reader
from flaxdigits.core.atomic import write_json_atomic
from flaxdigits.serve.page import budgets

TIMEOUT = 120.0  # every HTTP call of an honest request, as in loadtest
LOG_LINE = budgets.LOG_CHARS + 40  # a cut log line: the limit plus the "... [N more]" note
SERVER = """
import sys
from flaxdigits.serve.page.app import launch
launch(models_dir=sys.argv[1], port=int(sys.argv[2]), trusted_proxies=("127.0.0.1",))
"""
# The same page from another checkout (--before DIR: e.g. a `git worktree` of the commit before
# the guard), its flaxdigits and serve/ put first, launched as `flaxdigits serve` launches it.
BEFORE = """
import importlib.util, sys
root = sys.argv[3]
sys.path.insert(0, root)
import flaxdigits
spec = importlib.util.spec_from_file_location(
    "flaxdigits.serve", root + "/serve/__init__.py", submodule_search_locations=[root + "/serve"]
)
module = importlib.util.module_from_spec(spec)
sys.modules["flaxdigits.serve"] = module
spec.loader.exec_module(module)
from flaxdigits.serve import app
assert app.__file__.startswith(root), app.__file__
import inspect
proxies = {"trusted_proxies": ("127.0.0.1",)}  # from the guard on (issue 18): as SERVER
app.launch(
    models_dir=sys.argv[1],
    port=int(sys.argv[2]),
    **(proxies if "trusted_proxies" in inspect.signature(app.launch).parameters else {}),
)
"""


def start_server(
    models: Path,
    port: int,
    tmp: Path,
    log: Path,
    before: Path | None = None,
    default_sigint: bool = False,
) -> subprocess.Popen:
    """The page (launch) on 127.0.0.1:port, its temp dir under tmp, its output into log (a file:
    a pipe nobody reads would block the server once full); returns once it answers.

    default_sigint: SIGINT acts as Ctrl-C in a terminal, even when this script was started
    where it is ignored (a background job of a shell script)."""
    import signal

    env = {**os.environ, "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    script = (
        [BEFORE, str(models), str(port), str(before)]
        if before
        else [SERVER, str(models), str(port)]
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-c", *script],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
            if default_sigint
            else None,
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):  # noqa: S310
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start within 120 s")


def dir_bytes(root: Path) -> int:
    return dir_stats(root)[0]


def dir_stats(root: Path) -> tuple[int, int]:
    """(bytes, files) under root."""
    total = count = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
                count += 1
            except OSError:
                pass
    return total, count


class Sampler(threading.Thread):
    """RSS (MiB), open fds, temp-dir bytes and files, and log bytes of the server, every
    `every` seconds."""

    def __init__(self, pid: int, tmp: Path, counter, log: Path, every: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.tmp, self.counter, self.every = pid, tmp, counter, every
        self.log = log
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop.is_set():
            try:
                temp_bytes, temp_files = dir_stats(self.tmp)
                self.samples.append(
                    {
                        "t": round(time.monotonic() - self.t0, 2),
                        "requests": self.counter(),
                        "rss_mib": round(loadtest.rss_mib(self.pid), 1),
                        "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
                        "temp_bytes": temp_bytes,
                        "temp_files": temp_files,
                        "log_bytes": self.log.stat().st_size,
                    }
                )
            except (OSError, RuntimeError):
                pass
            self.stop.wait(self.every)


class Counter:
    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def add(self, k: int = 1):
        with self.lock:
            self.n += k

    def __call__(self):
        return self.n


# ----------------------------------------------------------------------------------- honest


def honest_client(url, files, answers, address, stop, counter, out):
    """Predict drawings until stop; record (latency, correct) per request."""
    import httpx
    from gradio_client import Client, handle_file

    client = Client(
        url,
        verbose=False,
        headers={"X-Forwarded-For": address},
        httpx_kwargs={"timeout": httpx.Timeout(TIMEOUT)},
    )
    rng = random.Random(address)  # noqa: S311 - a seeded simulation, not a secret
    while not stop():
        path = rng.choice(files)
        t = time.perf_counter()
        try:
            result = client.predict(image=handle_file(str(path)), api_name="/predict")
        except Exception as e:  # noqa: BLE001 - every failure is counted and shown
            out.append({"error": f"{type(e).__name__}: {e}"[:200]})
            counter.add(2)
            continue
        latency = time.perf_counter() - t
        want = answers[str(path)]
        correct = all(
            result["models"][name]["digit"] == p.digit
            and max(
                abs(a - b)
                for a, b in zip(
                    result["models"][name]["probabilities"], p.probabilities, strict=True
                )
            )
            <= 2e-6
            for name, p in want.items()
        )
        out.append({"latency": latency, "correct": correct})
        counter.add(2)  # the upload and the queue join


# ---------------------------------------------------------------------------------- hostile


def hostile_target(url: str) -> dict:
    """What the hostile requests aim at: the canvas's id, its stroke event, a 4096x4096 PNG."""
    from PIL import Image

    with urllib.request.urlopen(url + "config", timeout=30) as r:  # noqa: S310 - loopback
        config = json.load(r)
    sketch = next(c["id"] for c in config["components"] if c["props"].get("elem_id") == "sketch")
    stroke = next(
        i for i, d in enumerate(config["dependencies"]) if d["targets"] == [[sketch, "input"]]
    )
    return {"sketch": sketch, "stroke": stroke, "big_png": png_bytes(Image.new("1", (4096, 4096)))}


def sketch_id(url: str) -> int:
    with urllib.request.urlopen(url + "config", timeout=30) as r:  # noqa: S310 - loopback
        config = json.load(r)
    return next(c["id"] for c in config["components"] if c["props"].get("elem_id") == "sketch")


# Issue 34's hostile requests beside issue 18's (and their weights in the mix).
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


def hostile_client(url, port, target, seed, stop, counter, out, big_field_every=200):
    """Issue 18's and 34's hostile requests, mixed, each from a rotating address; outcomes."""
    import httpx

    rng = random.Random(seed)  # noqa: S311 - a seeded simulation, not a secret
    addresses = [f"10.{seed}.{i // 256}.{i % 256}" for i in range(64)]
    flooder = f"10.{seed}.255.1"  # one address sending joins as fast as it can
    html = b"<html><script>alert(1)</script></html>"
    kinds = [*KINDS_18, *KINDS_34]
    weights = [*KINDS_18.values(), *KINDS_34.values()]
    with httpx.Client(base_url=url, timeout=60) as http:
        for n in itertools.count():
            if stop():
                return
            if seed == 1:  # the first hostile client only floods queue joins from one address
                kind = "flood"
            elif n % big_field_every == big_field_every - 1:
                kind = "big_field"
            else:
                kind = rng.choices(kinds, weights)[0]
            address = flooder if kind in ("flood", "tiny_blobs") else rng.choice(addresses)
            if kind == "ipv6_64":
                address = f"2001:db8:{seed}:34::{rng.getrandbits(16):x}"
            headers = {"X-Forwarded-For": address}
            try:
                if kind in KINDS_34:
                    status = hostile_request_34(http, port, target, kind, headers, rng)
                else:
                    status = hostile_request(http, port, target["sketch"], kind, headers, rng, html)
            except (httpx.TransportError, OSError) as e:
                status = f"{type(e).__name__}"
            out.append((kind, status))
            counter.add(REQUESTS_PER_KIND.get(kind, 1))


def hostile_request(http, port, component, kind, headers, rng, html):
    form = {
        "component_id": str(component),
        "session_hash": f"{rng.getrandbits(40):x}",
        "fn_name": "accept_blobs",
        "id": f"{rng.getrandbits(48):x}",
        "type": "layer",
        "index": "0",
    }
    if kind == "huge_index":
        form["index"] = "20000000"
        files = {"file": ("layer_0.png", os.urandom(1000), "image/png")}
        return http.post(
            "/gradio_api/component_server", data=form, files=files, headers=headers
        ).status_code
    if kind == "abandoned":
        files = {"file": ("layer_0.png", os.urandom(100_000), "image/png")}
        return http.post(
            "/gradio_api/component_server", data=form, files=files, headers=headers
        ).status_code
    if kind == "forty_9mb":
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(
                b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\n"
                + f"X-Forwarded-For: {headers['X-Forwarded-For']}\r\n".encode()
                + b"Content-Type: multipart/form-data; boundary=b\r\n"
                + f"Content-Length: {40 * 9 * 1024 * 1024}\r\n\r\n--b\r\n".encode()
            )
            return int(s.recv(64).split(b" ")[1])
    if kind == "html_upload":
        r = http.post(
            "/gradio_api/upload", files={"files": ("x.png", html, "image/png")}, headers=headers
        )
        if r.status_code != 200:
            return r.status_code
        f = http.get(f"/gradio_api/file={r.json()[0]}", headers=headers)
        ok = (
            f.headers.get("x-content-type-options") == "nosniff"
            and f.headers.get("content-type") == "image/png"
        )
        return f.status_code if ok else "served without nosniff"
    if kind == "big_join":
        body = json.dumps({"data": ["A" * 100_000], "fn_index": 0, "session_hash": "x"})
        return http.post(
            "/gradio_api/queue/join",
            content=body,
            headers={**headers, "Content-Type": "application/json"},
        ).status_code
    if kind == "flood":
        return http.post(
            "/gradio_api/queue/join",
            content=b"{}",
            headers={**headers, "Content-Type": "application/json"},
        ).status_code
    if kind == "junk":
        return http.post(
            "/gradio_api/reset", content=os.urandom(rng.randrange(1, 20_000)), headers=headers
        ).status_code
    if kind == "big_field":

        def body():
            yield b'--b\r\nContent-Disposition: form-data; name="field"\r\n\r\n'
            for _ in range(12):
                yield b"x" * (1 << 20)
            yield b"\r\n--b--\r\n"

        return http.post(
            "/gradio_api/upload",
            content=body(),
            headers={**headers, "Content-Type": "multipart/form-data; boundary=b"},
        ).status_code
    raise ValueError(kind)


def hostile_request_34(http, port, target, kind, headers, rng):
    """One of issue 34's hostile requests; its status (or what became of it)."""
    if kind in ("unread_upload", "ipv6_64"):
        data = os.urandom(1 << 20) if kind == "unread_upload" else b""
        files = {"files": ("u.png", data, "image/png")}
        return http.post("/gradio_api/upload", files=files, headers=headers).status_code
    if kind in ("empty_parts", "other_field"):
        parts = [("files", f"e{i}.png", b"") for i in range(200)]
        if kind == "other_field":
            parts = [("other", "o.png", os.urandom(1000))]
        content_type = {"Content-Type": "multipart/form-data; boundary=b"}
        return http.post(
            "/gradio_api/upload", content=multipart(parts), headers={**headers, **content_type}
        ).status_code
    if kind == "unknown_stream":
        url = f"/gradio_api/queue/data?session_hash={rng.getrandbits(40):x}"
        return http.get(url, headers=headers).status_code
    if kind == "upgrade":
        return status_of(
            raw_request(
                port,
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            )
        )
    if kind == "te_and_cl":
        body = multipart([("files", "s.png", os.urandom(5000))])
        return status_of(
            send_then_body(
                port,
                b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                b"Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                + f"X-Forwarded-For: {headers['X-Forwarded-For']}\r\n\r\n".encode(),
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
            )
        )
    if kind == "tiny_blobs":
        codes = [
            http.post(
                "/gradio_api/component_server",
                data={
                    "component_id": str(target["sketch"]),
                    "session_hash": "tinyblobs",
                    "fn_name": "accept_blobs",
                    "id": f"{rng.getrandbits(48):x}",
                    "type": "layer",
                    "index": "0",
                },
                files={"file": ("layer_0.png", b"x", "image/png")},
                headers=headers,
            ).status_code
            for _ in range(20)
        ]
        return max(set(codes), key=codes.count)
    return editor_attack(http, target, kind, headers, rng)


def editor_attack(http, target, kind, headers, rng):
    """Queue joins of editor values: 20 path layers of a 4096x4096 PNG, or a refused value."""
    value = {"background": {"path": "x.png"}, "layers": [], "composite": None, "id": None}
    if kind == "path_layers":
        r = http.post(
            "/gradio_api/upload",
            files={"files": ("b.png", target["big_png"], "image/png")},
            headers=headers,
        )
        if r.status_code != 200:
            return f"upload {r.status_code}"
        layer = file_data(r.json()[0])
        value = {"background": layer, "layers": [layer] * 20, "composite": None, "id": None}
    body = {
        "data": ["draw", value, "mnist"],
        "fn_index": target["stroke"],
        "session_hash": f"{rng.getrandbits(40):x}",
        "trigger_id": target["sketch"],
    }
    return http.post(
        "/gradio_api/queue/join",
        content=json.dumps(body, separators=(",", ":")),
        headers={**headers, "Content-Type": "application/json"},
    ).status_code


# -------------------------------------------------------------------------- the rows


def peak_reset(pid: int) -> None:
    """Reset the kernel's peak-RSS mark of pid (VmHWM), so the next reading is this row's."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(key)


def settle(pid: int, seconds: float = 3.0) -> float:
    time.sleep(seconds)
    return vm(pid, "VmRSS")


def measure_rows(url, port, pid, tmp, files, answers) -> list[dict]:
    """Each row of the issue-18 table once, with the server's memory and temp dir around it."""
    import httpx
    from gradio_client import Client, handle_file

    rows = []
    component = sketch_id(url)
    form = {"component_id": str(component), "fn_name": "accept_blobs", "type": "layer"}
    with httpx.Client(base_url=url, timeout=300) as http:
        # 1. a layer index of 20,000,000 in a 1 KB request
        rss0 = settle(pid)
        r = http.post(
            "/gradio_api/component_server",
            data={**form, "session_hash": "row1", "id": "row1", "index": "20000000"},
            files={"file": ("layer_0.png", os.urandom(1000), "image/png")},
        )
        rows.append(
            {
                "row": "1 KB blob, layer index 20,000,000",
                "status": [r.status_code],
                "rss_growth_mib": round(settle(pid) - rss0, 1),
            }
        )
        # 2. 300 abandoned editor values of 100 KB, fresh ids and sessions
        rss0 = settle(pid)
        codes = {}
        for i in range(300):
            r = http.post(
                "/gradio_api/component_server",
                data={**form, "session_hash": f"row2-{i}", "id": f"row2-{i}", "index": "0"},
                files={"file": ("layer_0.png", os.urandom(100_000), "image/png")},
            )
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
        rows.append(
            {
                "row": "300 abandoned editor values x 100 KB",
                "status": codes,
                "rss_growth_mib": round(settle(pid) - rss0, 1),
            }
        )
        # 3. one upload whose only part is a 200 MB form field
        rss0 = settle(pid)
        peak_reset(pid)

        def field():
            yield b'--b\r\nContent-Disposition: form-data; name="field"\r\n\r\n'
            for _ in range(200):
                yield b"x" * (1 << 20)
            yield b"\r\n--b--\r\n"

        try:
            r = http.post(
                "/gradio_api/upload",
                content=field(),
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            )
            status = r.status_code
        except httpx.TransportError as e:
            status = type(e).__name__
        rows.append(
            {
                "row": "upload: one 200 MB form field",
                "status": [status],
                "peak_rss_growth_mib": round(vm(pid, "VmHWM") - rss0, 1),
            }
        )
        # 4. one upload request of 40 files x 9 MB
        before_bytes = dir_bytes(tmp)
        part = os.urandom(9 * 1024 * 1024)
        body = (
            b"".join(
                b'--b\r\nContent-Disposition: form-data; name="files"; filename="f%d.png"\r\n'
                b"Content-Type: image/png\r\n\r\n" % i + part + b"\r\n"
                for i in range(40)
            )
            + b"--b--\r\n"
        )
        try:
            r = http.post(
                "/gradio_api/upload",
                content=body,
                headers={"Content-Type": "multipart/form-data; boundary=b"},
            )
            status = r.status_code
        except httpx.TransportError as e:
            status = type(e).__name__
        del body, part
        rows.append(
            {
                "row": "upload: 40 files x 9 MB in one request",
                "status": [status],
                "temp_dir_growth_mb": round((dir_bytes(tmp) - before_bytes) / 1e6, 1),
            }
        )

        # 5. files left by 20 ordinary /predict calls
        def listing():
            out = {}
            for dirpath, _, names in os.walk(tmp):
                for name in names:
                    path = os.path.join(dirpath, name)
                    out[path] = os.path.getsize(path)
            return out

        before_files = listing()
        client = Client(url, verbose=False, headers={"X-Forwarded-For": "192.0.2.200"})
        for path in files[:20]:
            client.predict(image=handle_file(str(path)), api_name="/predict")
        time.sleep(8)  # the guard's grace before a released upload is deleted
        new = {p: n for p, n in listing().items() if p not in before_files}
        rows.append(
            {
                "row": "20 ordinary /predict calls",
                "new_files": len(new),
                "empty_files": sum(1 for n in new.values() if n == 0),
            }
        )
        # 6. HTML uploaded as x.png, fetched back
        html = b"<html><script>alert(1)</script></html>"
        r = http.post("/gradio_api/upload", files={"files": ("x.png", html, "image/png")})
        served = http.get(f"/gradio_api/file={r.json()[0]}")
        rows.append(
            {
                "row": "HTML uploaded as x.png, then GET /file=",
                "content_type": served.headers.get("content-type"),
                "nosniff": served.headers.get("x-content-type-options") == "nosniff",
                "csp": "content-security-policy" in served.headers,
            }
        )
    # 7. afterwards: real drawings through gradio_client, compared with the offline predictor
    client = Client(url, verbose=False, headers={"X-Forwarded-For": "192.0.2.201"})
    right = 0
    for path in files[:5]:
        result = client.predict(image=handle_file(str(path)), api_name="/predict")
        want = answers[str(path)]
        right += all(result["models"][n]["digit"] == p.digit for n, p in want.items())
    rows.append({"row": "afterwards: 5 real drawings through gradio_client", "correct": right})
    return rows


# ---------------------------------------------------------------------- issue 34's rows

MIB = 1 << 20


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def png_bytes(img) -> bytes:
    import io

    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def a_one() -> bytes:
    """A '1' as the page's canvas layer would send it: black ink on a transparent 400x400."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    ImageDraw.Draw(img).line([(200, 60), (200, 340)], fill=(0, 0, 0, 255), width=28)
    return png_bytes(img)


def raw_request(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send bytes on a fresh connection; the first bytes of the answer (b"" if none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            return s.recv(4096)
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
    out: dict[str, int] = {}
    for code in codes:
        out[str(code)] = out.get(str(code), 0) + 1
    return out


class Page:
    """What the rows need to know of a served page: its address, process, temp dir, log, ids."""

    def __init__(self, url, port, pid, tmp, log, files, answers):
        self.url, self.port, self.pid, self.tmp, self.log = url, port, pid, tmp, log
        self.files, self.answers = files, answers
        with urllib.request.urlopen(url + "config", timeout=30) as r:  # noqa: S310 - loopback
            config = json.load(r)
        ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
        self.sketch = ids["sketch"]
        self.fn_stroke = next(
            i
            for i, d in enumerate(config["dependencies"])
            if d["targets"] == [[self.sketch, "input"]]
        )

    def temp_files(self) -> tuple[int, int]:
        """(files, bytes) under the server's temp dir."""
        n = total = 0
        for dirpath, _, names in os.walk(self.tmp):
            for name in names:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_size
                    n += 1
                except OSError:
                    pass
        return n, total

    def honest(self, address: str) -> dict:
        """One honest /predict through gradio_client: correct?, seconds."""
        from gradio_client import Client, handle_file

        client = Client(self.url, verbose=False, headers={"X-Forwarded-For": address})
        path = self.files[0]
        t = time.perf_counter()
        try:
            result = client.predict(image=handle_file(str(path)), api_name="/predict")
        except Exception as e:  # noqa: BLE001 - the row reports it
            return {"error": f"{type(e).__name__}: {e}"[:200], "seconds": time.perf_counter() - t}
        want = self.answers[str(path)]
        correct = all(result["models"][n]["digit"] == p.digit for n, p in want.items())
        return {"correct": correct, "seconds": round(time.perf_counter() - t, 2)}

    def editor_join(self, http, value, address: str, timeout: float = 300.0) -> tuple[str, float]:
        """Queue a stroke event with this editor value; (the status line or error, seconds)."""
        session = f"{random.getrandbits(48):x}"  # noqa: S311 - an id, not a secret
        body = {
            "data": ["draw", value, "mnist"],
            "fn_index": self.fn_stroke,
            "session_hash": session,
            "event_data": None,
            "trigger_id": self.sketch,
        }
        headers = {"X-Forwarded-For": address, "Content-Type": "application/json"}
        t = time.perf_counter()
        content = json.dumps(body, separators=(",", ":"))
        r = http.post("/gradio_api/queue/join", content=content, headers=headers)
        if r.status_code != 200:
            return f"join {r.status_code}: {r.text[:100]}", time.perf_counter() - t
        url = f"/gradio_api/queue/data?session_hash={session}"
        with http.stream("GET", url, headers=headers, timeout=timeout) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    output = message.get("output") or {}
                    data = output.get("data")
                    text = data[1] if data else f"error: {output.get('error')}"
                    return str(text)[:200], time.perf_counter() - t
        return "no answer", time.perf_counter() - t

    def post_blob(self, http, value_id, kind, blob, address, index=0):
        form = {
            "component_id": str(self.sketch),
            "session_hash": f"s{value_id}"[:20],
            "fn_name": "accept_blobs",
            "id": value_id,
            "type": kind,
            **({"index": str(index)} if kind == "layer" else {}),
        }
        files = {"file": (f"{kind}.png", blob, "image/png")}
        headers = {"X-Forwarded-For": address}
        return http.post("/gradio_api/component_server", data=form, files=files, headers=headers)


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


def row_leases(page: Page, http) -> dict:
    """1: 10 MiB uploads from one address that nothing reads; then anyone's upload."""
    big = os.urandom(10 * MIB - 4096)
    t, codes = time.perf_counter(), []
    for i in range(40):
        r = http.post(
            "/gradio_api/upload",
            files={"files": (f"big{i}.png", big, "image/png")},
            headers={"X-Forwarded-For": "203.0.113.1"},
        )
        codes.append(r.status_code)
        if r.status_code != 200:
            break
    filled_s = time.perf_counter() - t
    filled_mib = round(page.temp_files()[1] / MIB, 1)
    photo = os.urandom(8 * MIB)  # another visitor's photo of a digit
    other = http.post(
        "/gradio_api/upload",
        files={"files": ("photo.png", photo, "image/png")},
        headers={"X-Forwarded-For": "203.0.113.2"},
    ).status_code
    honest = page.honest("203.0.113.3")
    t0, again = time.perf_counter(), None
    while time.perf_counter() - t0 < 150:
        r = http.post(
            "/gradio_api/upload",
            files={"files": ("photo.png", photo, "image/png")},
            headers={"X-Forwarded-For": "203.0.113.1"},
        )
        if r.status_code == 200:
            again = round(time.perf_counter() - t0, 1)
            break
        time.sleep(5)
    return {
        "row": "1: 10 MiB uploads from one address, never read",
        "first_address": count(codes),
        "seconds": round(filled_s, 1),
        "temp_dir_mib": filled_mib,
        "another_address_8mib_upload": other,
        "honest_predict": honest,
        "first_address_8mib_accepted_again_after_s": again if again is not None else "> 150",
    }


def row_empty_parts(page: Page, http, requests: int = 200) -> dict:
    """2: uploads of 1,000 empty file parts each; then how every route fares."""
    rss0 = settle(page.pid)
    files0 = page.temp_files()[0]
    codes, t = [], time.perf_counter()
    for j in range(requests):
        body = multipart([("files", f"r{j}e{i}.png", b"") for i in range(1000)])
        try:
            r = http.post(
                "/gradio_api/upload",
                content=body,
                headers={
                    "Content-Type": "multipart/form-data; boundary=b",
                    "X-Forwarded-For": f"203.0.113.{10 + j % 100}",
                },
            )
            codes.append(r.status_code)
        except httpx_errors() as e:
            codes.append(type(e).__name__)
        if time.perf_counter() - t > 300:
            break
    sent_s = time.perf_counter() - t
    files_after = page.temp_files()[0]
    small = os.urandom(10_000)
    times = []
    for i in range(5):
        t1 = time.perf_counter()
        http.post(
            "/gradio_api/upload",
            files={"files": (f"s{i}.png", small, "image/png")},
            headers={"X-Forwarded-For": "203.0.113.200"},
        )
        times.append(time.perf_counter() - t1)
    get_wait = get_behind_uploads(page, small)
    strays = stray_fields(page, http)
    return {
        "row": f"2: {len(codes)} uploads of 1,000 empty file parts",
        "status": count(codes),
        "seconds": round(sent_s, 1),
        "new_files": files_after - files0,
        "upload_10kb_s": round(float(np.median(times)), 3),
        "get_behind_20_uploads_s": round(get_wait, 2),
        "rss_growth_mib": round(settle(page.pid, 5) - rss0, 1),
        **strays,
    }


def httpx_errors():
    import httpx

    return (httpx.TransportError,)


def get_behind_uploads(page: Page, small: bytes) -> float:
    """Seconds a GET / waits while 20 tiny uploads are in flight."""
    import httpx

    def one(i):
        with httpx.Client(base_url=page.url, timeout=120) as h:
            h.post(
                "/gradio_api/upload",
                files={"files": (f"g{i}.png", small, "image/png")},
                headers={"X-Forwarded-For": f"198.18.0.{i}"},
            )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for th in threads:
        th.start()
    time.sleep(0.5)  # the uploads connected and sent
    t = time.perf_counter()
    with urllib.request.urlopen(page.url, timeout=120):  # noqa: S310 - loopback
        waited = time.perf_counter() - t
    for th in threads:
        th.join()
    return waited


def stray_fields(page: Page, http) -> dict:
    """2b: 20 uploads with a file part in a field not named `files`: files left at the top."""

    def top():
        return {e.name for e in os.scandir(page.tmp) if e.is_file()} | {
            f"{d.name}/{e.name}"
            for d in os.scandir(page.tmp)
            if d.is_dir() and d.name.startswith("flaxdigits-serve-")
            for e in os.scandir(d.path)
            if e.is_file()
        }

    before = top()
    codes = []
    for i in range(20):
        body = multipart([("other", f"o{i}.png", os.urandom(1000))])
        r = http.post(
            "/gradio_api/upload",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        codes.append(r.status_code)
    time.sleep(10)
    return {"other_field_status": count(codes), "other_field_files_left": len(top() - before)}


def row_log_flood(page: Page, http) -> dict:
    """3: requests that each write a log record: unknown SSE sessions, upgrades, bad lines."""
    out = {"row": "3: log flood"}

    def size():
        text = page.log.read_bytes()
        return len(text), text.count(b"\n")

    def measure(name, send):
        b0, l0 = size()
        t = time.perf_counter()
        codes = [send(i) for i in range(100)]
        seconds = time.perf_counter() - t
        time.sleep(2)
        b1, l1 = size()
        out[name] = {
            "status": count(codes),
            "seconds": round(seconds, 2),
            "log_bytes": b1 - b0,
            "log_lines": l1 - l0,
        }

    def sse(i):
        try:
            return http.get(f"/gradio_api/queue/data?session_hash=unknown{i}").status_code
        except httpx_errors() as e:  # the answer cut short: what the issue saw
            return type(e).__name__

    def upgrade(i):
        return status_of(
            raw_request(
                page.port,
                b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            )
        )

    def bad_line(i):
        return status_of(raw_request(page.port, b"GARBAGE /%d\r\n\r\n" % i))

    def bad_value(i):
        value = {"background": {"path": "x.png"}, "layers": [], "composite": None, "id": None}
        body = {
            "data": ["draw", value, "mnist"],
            "fn_index": page.fn_stroke,
            "session_hash": f"b{i}",
        }
        return http.post("/gradio_api/queue/join", json=body).status_code

    measure("unknown_session_sse_x100", sse)
    measure("websocket_upgrade_x100", upgrade)
    measure("malformed_request_line_x100", bad_line)
    measure("editor_value_gradio_refuses_x100", bad_value)  # Gradio prints each traceback
    out["honest_predict"] = page.honest("203.0.113.30")
    return out


def row_blob_fairness(page: Page, http) -> dict:
    """4: a visitor draws a 1; before its prediction, 520 one-byte blobs from one address."""
    one = a_one()
    for kind in ("layer", "composite"):
        page.post_blob(http, "honest-one", kind, one, "203.0.113.41")
    t, codes = time.perf_counter(), []
    for i in range(520):
        codes.append(page.post_blob(http, f"tiny{i}", "layer", b"x", "203.0.113.40").status_code)
    seconds = time.perf_counter() - t
    value = {"id": "honest-one", "background": None, "layers": [], "composite": None}
    status, wait = page.editor_join(http, value, "203.0.113.41")
    return {
        "row": "4: a drawn 1, then 520 one-byte blobs from one address, then its prediction",
        "flood_status": count(codes),
        "seconds": round(seconds, 1),
        "honest_drawing": status,
        "honest_seconds": round(wait, 2),
    }


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def row_editor_paths(page: Page, http) -> dict:
    """5: an editor value as file paths, up to 50 layers of one 4096x4096 PNG (one join)."""
    from PIL import Image

    bomb = png_bytes(Image.new("1", (4096, 4096), 1))
    r = http.post(
        "/gradio_api/upload",
        files={"files": ("b.png", bomb, "image/png")},
        headers={"X-Forwarded-For": "203.0.113.50"},
    )
    (path,) = r.json()
    page.honest("203.0.113.52")  # warm: the first event's own costs are not the row's
    out = {"row": f"5: editor value as paths, a {len(bomb):,}-byte 4096x4096 PNG"}
    entry = len(json.dumps(file_data(path), separators=(",", ":"))) + 1
    most = min(50, (budgets.OTHER_BODY_BYTES - 300) // entry)  # what fits in one join's body
    for layers in (1, most):
        value = {
            "background": file_data(path),
            "layers": [file_data(path)] * layers,
            "composite": None,
            "id": None,
        }
        settle(page.pid, 1)
        peak_reset(page.pid)
        rss0, cpu0 = vm(page.pid, "VmRSS"), cpu_seconds(page.pid)
        status, wait = page.editor_join(http, value, "203.0.113.51")
        out[f"{layers}_layers"] = {
            "join_bytes": len(
                json.dumps({"data": ["draw", value, "mnist"]}, separators=(",", ":"))
            ),
            "status": status,
            "seconds": round(wait, 2),
            "server_cpu_s": round(cpu_seconds(page.pid) - cpu0, 2),
            "peak_rss_growth_mib": round(vm(page.pid, "VmHWM") - rss0, 1),
        }
    return out


def row_te_and_cl(page: Page, http) -> dict:
    """6: Content-Length: 1 with Transfer-Encoding: chunked, 10 at once, near a full temp dir."""
    fill = os.urandom(10 * MIB - 4096)
    filled = []
    for i in range(24):  # ~240 MiB of unread uploads from 8 addresses, as the issue had
        r = http.post(
            "/gradio_api/upload",
            files={"files": (f"fill{i}.png", fill, "image/png")},
            headers={"X-Forwarded-For": f"203.0.113.{60 + i // 3}"},
        )
        filled.append(r.status_code)
    body = multipart([("files", "smuggled.png", os.urandom(10 * MIB - 4096))])
    chunks = (
        b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536])
            for i in range(0, len(body), 65536)
        )
        + b"0\r\n\r\n"
    )
    head = (
        b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"
    )
    peak = [page.temp_files()[1]]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak.append(page.temp_files()[1])
            time.sleep(0.1)

    codes = []

    def one(i):
        address = f"X-Forwarded-For: 203.0.113.{80 + i}\r\n\r\n".encode()
        try:
            codes.append(status_of(send_then_body(page.port, head + address, chunks)))
        except OSError as e:
            codes.append(type(e).__name__)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    time.sleep(1)
    done.set()
    sampler.join()
    return {
        "row": "6: Content-Length: 1 + Transfer-Encoding: chunked, 10 x 10 MiB at once",
        "prefill": count(filled),
        "status": count(codes),
        "temp_dir_peak_mb": round(max(peak) / 1e6, 1),
        "budget_mb": round(budgets.TEMP_DIR_BYTES / 1e6, 1),
        "honest_predict": page.honest("203.0.113.99"),
    }


def row_ipv6(page: Page, http) -> dict:
    """7: 300 uploads, each from another address of one IPv6 /64; IPv4 and IPv4-mapped."""
    codes = []
    for i in range(300):
        codes.append(
            http.post(
                "/gradio_api/upload",
                content=b"",
                headers={"X-Forwarded-For": f"2001:db8:0:1::{i + 1:x}"},
            ).status_code
        )
    mapped = []
    for i in range(300):
        address = "198.51.100.77" if i % 2 else "::ffff:198.51.100.77"
        mapped.append(
            http.post(
                "/gradio_api/upload", content=b"", headers={"X-Forwarded-For": address}
            ).status_code
        )
    return {
        "row": "7: one IPv6 /64 as 300 addresses; IPv4 and IPv4-mapped alternating",
        "one_64": count(codes),
        "ipv4_and_mapped": count(mapped),
        "upload_burst": budgets.RATES[budgets.UPLOAD].burst,
    }


def row_websocket(page: Page, http) -> dict:
    """8a: a websocket handshake (no websocket library is installed: uvicorn answers itself)."""
    reply = raw_request(
        page.port,
        b"GET /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    return {"row": "8a: websocket handshake", "status": status_of(reply)}


def stop_rows(models: Path, work: Path, before: Path | None) -> list[dict]:
    """8b: the server stopped by SIGINT (Ctrl-C) and SIGTERM: is its temp dir left behind?"""
    import signal

    out = []
    for name in ("SIGINT", "SIGTERM"):
        tmp = work / f"stop-{name}"
        tmp.mkdir()
        port = loadtest.free_port()
        proc = start_server(
            models, port, tmp, work / f"stop-{name}.log", before, default_sigint=True
        )
        served = [d.name for d in tmp.iterdir() if d.name.startswith("flaxdigits-serve-")]
        t = time.monotonic()
        proc.send_signal(getattr(signal, name))
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "killed after 60 s"
        left = [d for d in served if (tmp / d).exists()]
        out.append(
            {
                "row": f"8b: stopped by {name}",
                "exit": code,
                "seconds": round(time.monotonic() - t, 1),
                "temp_dirs_left": len(left),
            }
        )
    return out


ROWS_34 = (
    row_log_flood,
    row_blob_fairness,
    row_editor_paths,
    row_ipv6,
    row_websocket,
    row_te_and_cl,
    row_leases,
    row_empty_parts,
)


def run_rows_34(models, work, files, answers, before=None, only=()) -> list[dict]:
    """Each of issue 34's findings once, each against a freshly started page (its own temp dir
    and log: a finding that fills the disk for good must not decide the next row)."""
    import httpx

    rows = []
    for row in ROWS_34:
        if only and not any(o in row.__name__ for o in only):
            continue
        tmp = work / f"r{ROWS_34.index(row)}"  # short: a join names files by their full path
        tmp.mkdir()
        port = loadtest.free_port()
        log = work / f"{row.__name__}.log"
        proc = start_server(models, port, tmp, log, before)
        url = f"http://127.0.0.1:{port}/"
        try:
            page = Page(url, port, proc.pid, tmp, log, files, answers)
            with httpx.Client(base_url=url, timeout=300) as http:
                rows.append(row(page, http))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        print(json.dumps(rows[-1]), flush=True)
    if not only or any("stop" in o for o in only):
        rows += stop_rows(models, work, before)
    return rows


# ------------------------------------------------------------------------------------- run


def percentile(values, q):
    return float(np.percentile(values, q)) if values else None


def run_phase(url, port, files, answers, *, honest, hostile, until_requests, counter):
    stop_at = counter() + until_requests
    stop = lambda: counter() >= stop_at  # noqa: E731
    honest_out, hostile_out, threads = [], [], []
    target = hostile_target(url) if hostile else None
    for i in range(honest):
        args = (url, files, answers, f"192.0.2.{i + 1}", stop, counter, honest_out)
        threads.append(threading.Thread(target=honest_client, args=args))
    for i in range(hostile):
        args = (url, port, target, i + 1, stop, counter, hostile_out)
        threads.append(threading.Thread(target=hostile_client, args=args))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies = [r["latency"] for r in honest_out if "latency" in r]
    outcomes: dict[str, dict[str, int]] = {}
    for kind, status in hostile_out:
        by = outcomes.setdefault(kind, {})
        by[str(status)] = by.get(str(status), 0) + 1
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "honest_requests": len(honest_out),
        "honest_errors": [r["error"] for r in honest_out if "error" in r][:20],
        "honest_error_count": sum("error" in r for r in honest_out),
        "wrong_answers": sum(1 for r in honest_out if r.get("correct") is False),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "hostile_requests": len(hostile_out),
        "hostile_outcomes": outcomes,
    }


# What the caps let into the log in a minute: capped records and stderr lines, each cut to
# LOG_LINE, plus the first line of a minute that counts what the last one dropped (each cap).
LOG_BYTES_PER_MINUTE = (budgets.LOG_RECORDS_PER_MINUTE + budgets.STDERR_LINES_PER_MINUTE + 2) * (
    LOG_LINE + 60
)


def log_bytes_per_minute(samples) -> int:
    """The most bytes the server's log grew by in any 60 s of these samples."""
    most = 0
    for i, first in enumerate(samples):
        later = [s for s in samples[i:] if s["t"] - first["t"] <= 60]
        most = max(most, later[-1]["log_bytes"] - first["log_bytes"])
    return most


def slope_per_1000(samples, skip_fraction=0.2):
    """Least-squares RSS slope in MiB per 1,000 requests, after the first skip_fraction."""
    if len(samples) < 4:
        return None
    start = samples[int(len(samples) * skip_fraction)]["requests"]
    pts = [(s["requests"], s["rss_mib"]) for s in samples if s["requests"] >= start]
    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1] for p in pts], float)
    if np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0] * 1000)


def plot(samples, phases, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    series = [
        ("rss_mib", "server RSS (MiB)", 1, None),
        ("temp_bytes", "temp dir (MiB)", 1 << 20, budgets.TEMP_DIR_BYTES),
        ("temp_files", "temp dir (files)", 1, budgets.TEMP_DIR_FILES),
        ("log_bytes", "server log (KB)", 1000, None),
        ("requests", "requests done", 1, None),
    ]
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 12), sharex=True)
    for ax, (key, label, unit, budget) in zip(axes, series, strict=True):
        values = [s[key] / unit for s in samples]
        ax.plot(t, values)
        ax.set_ylabel(label)
        if budget is not None:
            ax.axhline(budget / unit, color="red", linestyle="--")
        for name, (a, _) in phases.items():
            ax.axvline(a, color="grey", linestyle=":")
            if key == "rss_mib":
                ax.text(a, max(values), f" {name}", va="top", fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.suptitle("make soak: honest-only, then honest + hostile (issues 18 and 34)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="models")
    parser.add_argument("--requests", type=int, default=20_000, help="total, both phases")
    parser.add_argument("--baseline", type=int, default=1_000, help="requests, honest only")
    parser.add_argument("--honest", type=int, default=4, help="honest clients")
    parser.add_argument("--hostile", type=int, default=4, help="hostile clients")
    parser.add_argument("--out", default="benchmarks/soak.json")
    parser.add_argument(
        "--rows",
        choices=("18", "34"),
        help="measure this issue's hostile rows once (each row of 34 on a fresh server), then stop",
    )
    parser.add_argument("--only", nargs="*", default=(), help="with --rows 34: these rows")
    parser.add_argument("--before", type=Path, help="serve this checkout instead (with --rows)")
    args = parser.parse_args(argv)
    before = args.before.resolve() if args.before else None

    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    files = [p for p, _ in loadtest.drawings(work, 20)]
    answers = loadtest.offline_answers(Path(args.models), files)
    if args.rows == "34":
        rows = run_rows_34(Path(args.models), work, files, answers, before, args.only)
        write_json_atomic(out, {"server": str(args.before or "this checkout"), "rows": rows})
        return 0
    port = loadtest.free_port()
    tmp = work / "server-tmp"
    tmp.mkdir()
    log = work / "server.log"
    proc = start_server(Path(args.models), port, tmp, log, before if args.rows else None)
    url = f"http://127.0.0.1:{port}/"
    if args.rows:
        try:
            rows = measure_rows(url, port, proc.pid, tmp, files, answers)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        write_json_atomic(out, {"server": str(args.before or "this checkout"), "rows": rows})
        print(json.dumps(rows, indent=1))
        return 0
    counter = Counter()
    sampler = Sampler(proc.pid, tmp, counter, log)
    sampler.start()
    phases = {}
    try:
        t = time.monotonic() - sampler.t0
        baseline = run_phase(
            url,
            port,
            files,
            answers,
            honest=args.honest,
            hostile=0,
            until_requests=args.baseline,
            counter=counter,
        )
        phases["honest only"] = (t, time.monotonic() - sampler.t0)
        t = time.monotonic() - sampler.t0
        mixed = run_phase(
            url,
            port,
            files,
            answers,
            honest=args.honest,
            hostile=args.hostile,
            until_requests=args.requests - args.baseline,
            counter=counter,
        )
        phases["honest + hostile"] = (t, time.monotonic() - sampler.t0)
        time.sleep(2)
    finally:
        sampler.stop.set()
        sampler.join()
        alive = proc.poll() is None
        proc.terminate()
        proc.wait(timeout=30)
    samples = sampler.samples
    log_lines = log.read_text(errors="replace").splitlines()
    mixed_samples = [s for s in samples if s["t"] >= phases["honest + hostile"][0]]
    slope = slope_per_1000(mixed_samples)
    temp_peak = max(s["temp_bytes"] for s in samples)
    files_peak = max(s["temp_files"] for s in samples)
    log_minute = log_bytes_per_minute(mixed_samples)
    checks = {
        "rss slope < 1 MiB / 1,000 requests": slope is not None and slope < 1.0,
        "temp dir within budget": temp_peak <= budgets.TEMP_DIR_BYTES,
        "temp dir files within budget": files_peak <= budgets.TEMP_DIR_FILES,
        "log bytes a minute within the caps": log_minute <= LOG_BYTES_PER_MINUTE,
        "no wrong honest answers": baseline["wrong_answers"] == 0 and mixed["wrong_answers"] == 0,
        "no honest errors": baseline["honest_error_count"] == 0
        and mixed["honest_error_count"] == 0,
        "honest p95 within 2x of honest-only": mixed["latency_p95_s"] is not None
        and mixed["latency_p95_s"] <= 2 * baseline["latency_p95_s"],
        "server alive": alive,
        "server log lines within the cut": all(len(line) <= LOG_LINE for line in log_lines),
    }
    report = {
        "requests": counter(),
        "phases": {"honest_only": baseline, "mixed": mixed},
        "rss_mib": {
            "start": samples[0]["rss_mib"],
            "end": samples[-1]["rss_mib"],
            "peak": max(s["rss_mib"] for s in samples),
            "slope_after_warmup_per_1000_requests": slope,
        },
        "fds": {
            "start": samples[0]["fds"],
            "peak": max(s["fds"] for s in samples),
            "end": samples[-1]["fds"],
        },
        "temp_dir_bytes": {
            "peak": temp_peak,
            "end": samples[-1]["temp_bytes"],
            "budget": budgets.TEMP_DIR_BYTES,
        },
        "temp_dir_files": {
            "peak": files_peak,
            "end": samples[-1]["temp_files"],
            "budget": budgets.TEMP_DIR_FILES,
        },
        "server_log": {
            "most_bytes_in_a_minute_under_the_flood": log_minute,
            "cap_bytes_a_minute": LOG_BYTES_PER_MINUTE,
            "bytes": log.stat().st_size,
            "lines": len(log_lines),
            "longest_line": max((len(line) for line in log_lines), default=0),
            "tail": [line[:300] for line in log_lines[-5:]],
        },
        "checks": checks,
        "samples": samples,
    }
    write_json_atomic(out, report)
    plot(samples, phases, out.with_suffix(".png"))
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
