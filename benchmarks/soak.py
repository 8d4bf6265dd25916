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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import loadtest  # noqa: E402 - the sibling benchmark's drawings, answers and RSS reader

from flaxdigits.core.atomic import write_json_atomic  # noqa: E402
from flaxdigits.serve.page import budgets  # noqa: E402

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
app.launch(models_dir=sys.argv[1], port=int(sys.argv[2]))
"""


def start_server(
    models: Path, port: int, tmp: Path, log: Path, before: Path | None = None
) -> subprocess.Popen:
    """The page (launch) on 127.0.0.1:port, its temp dir under tmp, its output into log (a file:
    a pipe nobody reads would block the server once full); returns once it answers."""
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
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


class Sampler(threading.Thread):
    """RSS (MiB), open fds and temp-dir bytes of the server, every `every` seconds."""

    def __init__(self, pid: int, tmp: Path, counter, every: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.tmp, self.counter, self.every = pid, tmp, counter, every
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self):
        while not self.stop.is_set():
            try:
                self.samples.append(
                    {
                        "t": round(time.monotonic() - self.t0, 2),
                        "requests": self.counter(),
                        "rss_mib": round(loadtest.rss_mib(self.pid), 1),
                        "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
                        "temp_bytes": dir_bytes(self.tmp),
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


def sketch_id(url: str) -> int:
    with urllib.request.urlopen(url + "config", timeout=30) as r:  # noqa: S310 - loopback
        config = json.load(r)
    return next(c["id"] for c in config["components"] if c["props"].get("elem_id") == "sketch")


def hostile_client(url, port, component, seed, stop, counter, out, big_field_every=200):
    """Issue-18's hostile requests, mixed, each from a rotating address; outcomes by kind."""
    import httpx

    rng = random.Random(seed)  # noqa: S311 - a seeded simulation, not a secret
    addresses = [f"10.{seed}.{i // 256}.{i % 256}" for i in range(64)]
    flooder = f"10.{seed}.255.1"  # one address sending joins as fast as it can
    html = b"<html><script>alert(1)</script></html>"
    kinds = ["huge_index", "abandoned", "forty_9mb", "html_upload", "big_join", "flood", "junk"]
    weights = [2, 3, 1, 1, 2, 6, 2]
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
            headers = {"X-Forwarded-For": flooder if kind == "flood" else rng.choice(addresses)}
            try:
                status = hostile_request(http, port, component, kind, headers, rng, html)
            except httpx.TransportError as e:
                status = f"{type(e).__name__}"
            out.append((kind, status))
            counter.add(2 if kind == "html_upload" else 1)


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


# ------------------------------------------------------------------------------------- run


def percentile(values, q):
    return float(np.percentile(values, q)) if values else None


def run_phase(url, port, files, answers, *, honest, hostile, until_requests, counter):
    stop_at = counter() + until_requests
    stop = lambda: counter() >= stop_at  # noqa: E731
    honest_out, hostile_out, threads = [], [], []
    component = sketch_id(url) if hostile else None
    for i in range(honest):
        args = (url, files, answers, f"192.0.2.{i + 1}", stop, counter, honest_out)
        threads.append(threading.Thread(target=honest_client, args=args))
    for i in range(hostile):
        args = (url, port, component, i + 1, stop, counter, hostile_out)
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
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    series = [
        ("rss_mib", "server RSS (MiB)"),
        ("fds", "open file descriptors"),
        ("temp_bytes", "temp dir (MiB)"),
        ("requests", "requests done"),
    ]
    for ax, (key, label) in zip(axes, series, strict=True):
        values = [s[key] / (1 << 20) if key == "temp_bytes" else s[key] for s in samples]
        ax.plot(t, values)
        ax.set_ylabel(label)
        for name, (a, _) in phases.items():
            ax.axvline(a, color="grey", linestyle=":")
            if key == "rss_mib":
                ax.text(a, max(values), f" {name}", va="top", fontsize=8)
    axes[2].axhline(budgets.TEMP_DIR_BYTES / (1 << 20), color="red", linestyle="--")
    axes[-1].set_xlabel("seconds")
    fig.suptitle("make soak: honest-only, then honest + hostile")
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
        "--rows", action="store_true", help="measure the issue's hostile rows once, then stop"
    )
    parser.add_argument("--before", type=Path, help="serve this checkout instead (with --rows)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    files = [p for p, _ in loadtest.drawings(work, 20)]
    answers = loadtest.offline_answers(Path(args.models), files)
    port = loadtest.free_port()
    tmp = work / "server-tmp"
    tmp.mkdir()
    log = work / "server.log"
    proc = start_server(Path(args.models), port, tmp, log, args.before if args.rows else None)
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
    sampler = Sampler(proc.pid, tmp, counter)
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
    checks = {
        "rss slope < 1 MiB / 1,000 requests": slope is not None and slope < 1.0,
        "temp dir within budget": temp_peak <= budgets.TEMP_DIR_BYTES,
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
        "server_log": {
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
