"""A phase of the soak: honest and hostile client threads until the requests reach a count;
latencies, wrong answers, errors and the hostile requests' outcomes."""

from __future__ import annotations

import threading
import time

import numpy as np

from benchmarks.soak.honest import honest_client
from benchmarks.soak.hostile import hostile_client, hostile_target


def percentile(values, q):
    return float(np.percentile(values, q)) if values else None


def run_phase(url, port, files, answers, *, honest, hostile, until_requests, counter) -> dict:
    """`honest` + `hostile` clients until `until_requests` more requests are done."""
    stop_at = counter() + until_requests

    def stop():
        return counter() >= stop_at

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
    return {"seconds": round(time.monotonic() - t0, 1), **summary(honest_out, hostile_out)}


def summary(honest_out: list[dict], hostile_out: list[tuple]) -> dict:
    """The honest requests' errors, wrong answers and latency; the hostile ones' outcomes."""
    latencies = [r["latency"] for r in honest_out if "latency" in r]
    outcomes: dict[str, dict[str, int]] = {}
    for kind, status in hostile_out:
        by = outcomes.setdefault(kind, {})
        by[str(status)] = by.get(str(status), 0) + 1
    return {
        "honest_requests": len(honest_out),
        "honest_errors": [r["error"] for r in honest_out if "error" in r][:20],
        "honest_error_count": sum("error" in r for r in honest_out),
        "wrong_answers": sum(1 for r in honest_out if r.get("correct") is False),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "hostile_requests": len(hostile_out),
        "hostile_outcomes": outcomes,
    }
