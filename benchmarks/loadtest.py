"""`make loadtest`: many gradio_client clients against `flaxdigits serve` on loopback.

Bounded in count and time, stops by itself. Checks: no errors, every answer equal to the offline
predictor's, latency percentiles, a clean "busy" answer past the queue limit with the server
still up afterwards, and the server's RSS before/after.

    python -m benchmarks.loadtest --models models --clients 50 --requests 20
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from flaxdigits.core import contract
from flaxdigits.core.atomic import write_json_atomic
from tests.support.ports import PortTaken, on_free_port, says_port_taken


def rss_mib(pid: int) -> float:
    """Resident set size of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def drawings(directory: Path, n: int, seed: int = 0) -> list[tuple[Path, int]]:
    """n MNIST test digits redrawn as canvases (PNG files), with their labels."""
    from PIL import Image

    from flaxdigits.data.mnist import load_mnist
    from flaxdigits.evaluation.canvases import render_canvas

    mnist = load_mnist()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        path = directory / f"digit{i:03d}.png"
        Image.fromarray(render_canvas(mnist.test_images[i], rng)).save(path)
        out.append((path, int(mnist.test_labels[i])))
    return out


def offline_answers(models: Path, files: list[Path]) -> dict[str, dict]:
    """What the offline predictor says for each file (the reference for the server's answers)."""
    from flaxdigits.serve.runtime.decode import load_image_file
    from flaxdigits.serve.runtime.predictor import Predictor
    from flaxdigits.serve.runtime.preprocess import preprocess

    predictors = {n: Predictor(models / f"{n}.onnx") for n in contract.MODEL_NAMES}
    answers = {}
    for path in files:
        image = preprocess(load_image_file(path), "mnist").image
        answers[str(path)] = {n: p.predict(image) for n, p in predictors.items()}
    return answers


def start_server(models: Path, port: int, threads: int = 1) -> subprocess.Popen:
    """`flaxdigits serve` on 127.0.0.1:port; returns once the page answers (or raises).

    Its log goes to an unnamed temporary file, not a pipe: nobody reads a pipe while the load
    runs, and a server blocked on a full 64 KB pipe buffer would be measured as a slow one."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server process
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and entry point
        [sys.executable, "-m", "flaxdigits", "serve", "--models", str(models), "--port", str(port)]
        + ["--threads", str(threads)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            out = log.read().decode(errors="replace")[-2000:]
            if says_port_taken(out):
                raise PortTaken(port, out)
            raise RuntimeError(f"server exited: {out}")
        try:
            page = f"http://127.0.0.1:{port}/"  # loopback only, built here
            with urllib.request.urlopen(page, timeout=2):  # noqa: S310 - fixed loopback URL
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start within 120 s")


def client_for(url: str, timeout: float):
    """A gradio_client Client whose every HTTP call (config, upload, queue join, event stream)
    waits up to `timeout` seconds. Left alone, the upload and the queue join use httpx's 5 s
    default: a client giving up early under load would be counted as a server error."""
    import httpx
    from gradio_client import Client

    return Client(url, verbose=False, httpx_kwargs={"timeout": httpx.Timeout(timeout)})


def run_clients(url: str, files, answers, clients: int, requests: int, timeout: float) -> dict:
    """clients threads x requests each; returns latencies, errors and mismatches."""
    from gradio_client import handle_file

    def worker(k: int):
        client = client_for(url, timeout)
        times, errors, mismatches = [], [], 0
        for j in range(requests):
            path, _ = files[(k * requests + j) % len(files)]
            t = time.perf_counter()
            try:
                job = client.submit(handle_file(str(path)), "mnist", api_name="/predict")
                result = job.result(timeout=timeout)
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            times.append(time.perf_counter() - t)
            expected = answers[str(path)]
            for name, pred in expected.items():
                got = result["models"][name]
                same_digit = got["digit"] == pred.digit
                close = np.allclose(got["probabilities"], pred.probabilities, atol=2e-6)
                if not (same_digit and close):
                    mismatches += 1
        return times, errors, mismatches

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(worker, range(clients)))
    times = [t for r in results for t in r[0]]
    ms = np.asarray(times) * 1000 if times else np.zeros(1)
    return {
        "clients": clients,
        "requests": clients * requests,
        "ok": len(times),
        "errors": [e for r in results for e in r[1]],
        "mismatches": sum(r[2] for r in results),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def _merge(rounds: list[dict]) -> dict:
    """One summary over several run_clients results (percentiles weighted by request count)."""
    merged = {
        "clients": rounds[0]["clients"],
        "requests": sum(r["requests"] for r in rounds),
        "ok": sum(r["ok"] for r in rounds),
        "errors": [e for r in rounds for e in r["errors"]],
        "mismatches": sum(r["mismatches"] for r in rounds),
        "rounds": len(rounds),
    }
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        merged[key] = max(r[key] for r in rounds)  # the worst round: conservative
    return merged


def overload(url: str, path: Path, burst: int, timeout: float) -> dict:
    """A burst larger than the queue, one client per request, all at once: the extra requests
    must get a clean "queue full" (the server's HTTP 503), never another error, within the
    per-request timeout. Reports how long the slowest answer of each kind took."""
    from gradio_client import handle_file

    clients = [client_for(url, timeout) for _ in range(burst)]
    image = handle_file(str(path))
    start = threading.Barrier(burst)

    def one(client) -> tuple[str, float]:
        start.wait()
        t = time.perf_counter()
        try:
            client.submit(image, "mnist", api_name="/predict").result(timeout=timeout)
            kind = "ok"
        except Exception as e:  # noqa: BLE001 - classified below
            text = str(e).lower()
            kind = "busy" if "full" in text or "busy" in text else f"{type(e).__name__}: {e}"[:200]
        return kind, time.perf_counter() - t

    with concurrent.futures.ThreadPoolExecutor(burst) as pool:
        outcomes = list(pool.map(one, clients))
    kinds = [k for k, _ in outcomes]

    def slowest(kind: str) -> float | None:
        times = [s for k, s in outcomes if k == kind]
        return round(max(times), 2) if times else None

    return {
        "burst": burst,
        "ok": kinds.count("ok"),
        "busy": kinds.count("busy"),
        "other_errors": [k for k in kinds if k not in ("ok", "busy")],
        "slowest_ok_s": slowest("ok"),
        "slowest_busy_s": slowest("busy"),
    }


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.loadtest", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--models", default="models")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--burst", type=int, default=200, help="overload burst > queue (0: skip)")
    ap.add_argument("--rounds", type=int, default=3, help="load rounds (RSS after each)")
    ap.add_argument(
        "--timeout", type=float, default=120.0, help="per-request timeout (every HTTP call), s"
    )
    ap.add_argument("--out", default="benchmarks/loadtest.json")
    return ap


def stop_server(server: subprocess.Popen) -> None:
    """Terminate the server, killing it if it has not exited within 30 s."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def load_rounds(url: str, pid: int, files, answers, args: argparse.Namespace) -> dict:
    """A warm-up, then args.rounds rounds of args.clients x args.requests, with the server's
    RSS after the warm-up and after each round."""
    # Warm up at full concurrency with as many requests as a round (connections, the worker
    # threads and their allocator arenas, upload cache), so the RSS before/after brackets a
    # steady state: growth then means a leak, not a first use. (With 2 requests a client,
    # rounds 1-3 still grew by 13-16, 5-8 and up to 20+ MiB.)
    warm = run_clients(url, files, answers, args.clients, max(2, args.requests), args.timeout)
    rss = [rss_mib(pid)]
    rounds = []
    for _ in range(args.rounds):  # RSS after each round: a leak keeps climbing
        rounds.append(run_clients(url, files, answers, args.clients, args.requests, args.timeout))
        rss.append(rss_mib(pid))
    return {
        "warmup": warm,
        "load": _merge(rounds),
        "rss_mib_before": rss[0],
        "rss_mib_after": rss[-1],
        "rss_mib_per_round": rss,
    }


def measure(args: argparse.Namespace) -> dict:
    """The server on a free port, under load, past its queue, and once more after that."""
    models = Path(args.models)
    with tempfile.TemporaryDirectory(prefix="flaxdigits-load-") as tmp:
        files = drawings(Path(tmp), 20)
        answers = offline_answers(models, [p for p, _ in files])
        port, server = on_free_port(lambda port: start_server(models, port))
        url = f"http://127.0.0.1:{port}/"
        try:
            report = load_rounds(url, server.pid, files, answers, args)
            burst = args.burst
            report["overload"] = overload(url, files[0][0], burst, args.timeout) if burst else None
            # still up and right
            report["after_overload"] = run_clients(url, files, answers, 1, 3, args.timeout)
            report["server_alive_after"] = server.poll() is None
        finally:
            stop_server(server)
    report["cores"] = os.cpu_count()
    return report


def checks(report: dict) -> dict[str, bool]:
    """What the load test promises, each true or false."""
    load, after, over = report["load"], report["after_overload"], report["overload"]
    rss = report["rss_mib_per_round"]
    return {
        "no errors": not load["errors"] and not after["errors"],
        "answers equal offline predictor": load["mismatches"] == 0 and after["mismatches"] == 0,
        "server alive after overload": report["server_alive_after"]
        and after["ok"] == after["requests"],
        "overload answered cleanly": over is None or not over["other_errors"],
        "past the queue limit: busy answers": over is None or over["busy"] > 0,
        # Allocator pools and caches may settle during the first round; a leak grows every round.
        "RSS flat after the first round (< 20 MiB a round)": all(
            b - a < 20 for a, b in zip(rss[1:], rss[2:], strict=False)
        )
        and report["rss_mib_after"] - report["rss_mib_before"] < 100,
    }


def main(argv=None) -> int:
    """Run the load test; exit 1 if any check fails."""
    args = _parser().parse_args(argv)
    report = measure(args)
    report["checks"] = checks(report)
    write_json_atomic(args.out, report)
    print(json.dumps({k: report[k] for k in ("load", "overload")}, indent=1))
    before, after = report["rss_mib_before"], report["rss_mib_after"]
    print(f"RSS {before:.0f} -> {after:.0f} MiB; checks: {report['checks']}")
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
