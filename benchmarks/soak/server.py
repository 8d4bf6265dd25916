"""The page the soak measures, in a process of its own: `launch` of the first flaxdigits on
sys.path, with 127.0.0.1 as its trusted proxy.

    python -P benchmarks/soak/server.py MODELS PORT --expect-under DIR [--ctrl-c]
        [--probe FILE] [--trace FRAMES --trace-out FILE]

benchmarks/soak/serving.py runs it by path with -P (its own folder not on sys.path) from a
working directory outside the checkouts: the flaxdigits it serves is this checkout's (the venv's
install) or, with PYTHONPATH=TREE, an older checkout laid out as installed (--before).
--expect-under: the served page's module must lie under DIR, or the server exits at once.
--ctrl-c: SIGINT interrupts, as Ctrl-C in a terminal, even when this process was started with it
ignored (a background job of a shell script). --probe: the sizes of the server's bounded stores,
and what malloc holds, written to FILE every second; on SIGUSR2, malloc_trim(0) with VmRSS
before and after (FILE's sibling .trim.json). --malloc-trim-every S: malloc_trim(0) every S
seconds (an experiment: the page itself never trims). --trace FRAMES: tracemalloc from the start;
at each SIGUSR1 a snapshot's growth by source line (since the last, and the first) appended to
--trace-out.

Only the standard library and flaxdigits (and what it imports) here: an older checkout is served
by this same file.
"""

from __future__ import annotations

import argparse
import ctypes
import inspect
import json
import os
import signal
import sys
import threading
import time
import tracemalloc
from pathlib import Path

PROBE_EVERY_S = 1.0
TRACE_TOP = 25  # source lines listed per snapshot


def page_launch():
    """flaxdigits' `launch`: serve/page/app.py, or serve/app.py in a checkout from before it."""
    try:
        from flaxdigits.serve.page.app import launch
    except ModuleNotFoundError as e:
        if e.name not in ("flaxdigits.serve.page", "flaxdigits.serve.page.app"):
            raise
        from flaxdigits.serve.app import launch
    return launch


def serve(args) -> None:
    """Launch the page (trusted proxy 127.0.0.1 where the checkout has the option) and block."""
    launch = page_launch()
    where = Path(inspect.getfile(launch)).resolve()
    if not where.is_relative_to(Path(args.expect_under).resolve()):
        sys.exit(f"soak server: serving {where}, not a file under {args.expect_under}")
    options = {"models_dir": args.models, "port": args.port, "block": False}
    if "trusted_proxies" in inspect.signature(launch).parameters:  # from the guard on (issue 18)
        options["trusted_proxies"] = ("127.0.0.1",)
    if args.trace:  # before the page is built: everything it allocates is traced
        tracemalloc.start(args.trace)
    demo = launch(**options)
    if args.probe:
        threading.Thread(target=probe, args=(demo, Path(args.probe)), daemon=True).start()
        trim_on_signal(Path(args.probe).with_suffix(".trim.json"))
    if args.malloc_trim_every:
        threading.Thread(target=trim_every, args=(args.malloc_trim_every,), daemon=True).start()
    if args.trace:
        marks = threading.Event()
        signal.signal(signal.SIGUSR1, lambda *_: marks.set())
        tracer = threading.Thread(
            target=trace, args=(marks, args.trace, Path(args.trace_out)), daemon=True
        )
        tracer.start()
    print(f"soak server: serving {where} on port {args.port}", flush=True)  # serving.READY
    demo.block_thread()


def stores(demo) -> dict:
    """How full each bounded store of the server is now (None where this checkout has none)."""
    from gradio import routes

    queue = demo._queue
    pending = list(queue.pending_messages_per_session.values())
    out = {
        "sessions": len(demo.state_holder.session_data),
        "pending_sessions": len(pending),
        "pending_messages": sum(q.qsize() for q in pending),
        "events": len(queue.event_ids_to_events),
        "event_ids_by_session": len(queue.pending_event_ids_session),
        "event_analytics": len(queue.event_analytics),
        "upload_set": len(demo.upload_file_set),
        "upload_progress": len(getattr(routes.file_upload_statuses, "_statuses", ())),
    }
    out.update(guard_stores(demo))
    out["bounds"] = bounds(demo)
    return out


def bounds(demo) -> dict:
    """The most each store holds, as the server is configured (None: unknown here)."""
    queue = demo._queue
    out = {
        "sessions": demo.state_holder.capacity,
        "pending_sessions": queue.pending_messages_per_session.max_size,
        "event_analytics": getattr(queue, "ANALYTICS_MAX_EVENTS", None),
        "rate_buckets": None,
    }
    limiter = getattr(guard_of(demo), "limiter", None)
    if limiter is not None:
        out["rate_buckets"] = limiter.max_clients * len(limiter.rates)
    return out


def guard_of(demo):
    """The guard in the server's middleware stack (None before issue 18's guard)."""
    node = getattr(demo.server_app, "middleware_stack", None)
    while node is not None and not hasattr(node, "limiter"):
        node = getattr(node, "app", None)
    return node


def guard_stores(demo) -> dict:
    """The guard's own maps: rate buckets, temp-dir leases and owners, pending editor values."""
    out = {"rate_buckets": None, "leases": None, "disk_owners": None, "editor_values": None}
    guard = guard_of(demo)
    if guard is not None:
        out["rate_buckets"] = len(guard.limiter._buckets)
    ledger = getattr(demo, "guard_temp_files", None)
    if ledger is not None:
        out["leases"] = len(ledger._leases)
        out["disk_owners"] = len(getattr(ledger, "_owners", ()))
    sketch = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "sketch"]
    store = getattr(sketch[0], "store", None) if sketch else None
    if store is not None:
        out["editor_values"] = len(store)
        out["editor_bytes"] = store.nbytes
    return out


class MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (glibc 2.33 on)."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def malloc_stats():
    """What malloc holds, in MiB: in use, free but kept in its arenas, mapped apart (large
    blocks); None where glibc's mallinfo2 is not there. A read: nothing is trimmed."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2
    info = mallinfo2()
    return {
        "malloc_in_use_mib": round(info.uordblks / 2**20, 1),
        "malloc_free_mib": round(info.fordblks / 2**20, 1),
        "malloc_mmap_mib": round(info.hblkhd / 2**20, 1),
    }


def probe(demo, path: Path) -> None:
    """Write the stores' sizes and malloc's figures to path (replaced whole) every
    PROBE_EVERY_S."""
    part = path.with_suffix(".part")
    while True:
        try:
            sizes = {"t": time.time(), **stores(demo), **(malloc_stats() or {})}
            sizes["python_blocks"] = sys.getallocatedblocks()  # Python's objects, pymalloc's too
        except RuntimeError:  # a map changed size while it was read: the next second will do
            sizes = None
        if sizes is not None:
            part.write_text(json.dumps(sizes))
            os.replace(part, path)
        time.sleep(PROBE_EVERY_S)


def trim_on_signal(path: Path) -> None:
    """On SIGUSR2 (the soak sends it once, after its last sample): VmRSS and malloc's figures,
    malloc_trim(0), the same again, written to path: how much of the RSS was memory malloc had
    freed and kept."""

    def figures():
        rss = next(
            int(line.split()[1]) / 1024
            for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        return {"rss_mib": round(rss, 1), **(malloc_stats() or {})}

    def handler(*_):
        before = figures()
        try:
            released = bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
        except (OSError, AttributeError):
            released = None
        path.write_text(json.dumps({"before": before, "after": figures(), "released": released}))

    signal.signal(signal.SIGUSR2, handler)


def trim_every(seconds: float) -> None:
    """malloc_trim(0) every seconds: an experiment (--malloc-trim-every), not the page's own
    behaviour: what RSS would do if the served process gave malloc's free pages back."""
    try:
        malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return
    while True:
        time.sleep(seconds)
        malloc_trim(0)


def trace(marks: threading.Event, frames: int, out: Path) -> None:
    """At each mark one JSON line: what tracemalloc traces (on since the server started: every
    store's contents are traced, so a store that turns over nets to zero), the source lines whose
    live allocations grew the most since the last mark and since the first, and the largest. The
    snapshots kept (this mark's and the first) live in the server too: a traced run's RSS is not
    the soak's."""
    first = previous = None
    while True:
        marks.wait()
        marks.clear()
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        live = total(snapshot)
        line = {"t": time.time(), "traced_mib": live / 2**20}  # the snapshots kept: not counted
        if previous is not None:
            line["net_since_last_mib"] = (live - total(previous)) / 2**20
            line["since_last"] = growth(snapshot, previous)
            line["since_first"] = growth(snapshot, first)
            if frames > 1:  # who called, for the top lines
                line["since_last_stacks"] = growth(snapshot, previous, "traceback", 10)
        line["largest"] = [
            {"where": str(s.traceback), "mib": round(s.size / 2**20, 3), "blocks": s.count}
            for s in snapshot.statistics("lineno")[:TRACE_TOP]
        ]
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        first, previous = first or snapshot, snapshot


def total(snapshot) -> int:
    """Bytes of the live allocations a snapshot holds."""
    return sum(stat.size for stat in snapshot.statistics("filename"))


def growth(snapshot, before, key: str = "lineno", top: int = TRACE_TOP) -> list[dict]:
    """The source lines (key "traceback": the stacks) whose live allocations grew the most from
    before to snapshot."""
    diffs = snapshot.compare_to(before, key)
    return [
        {
            "where": [f"{f.filename}:{f.lineno}" for f in d.traceback]
            if key == "traceback"
            else str(d.traceback),
            "mib": round(d.size_diff / 2**20, 3),
            "blocks": d.count_diff,
            "now_mib": round(d.size / 2**20, 3),
        }
        for d in sorted(diffs, key=lambda d: d.size_diff, reverse=True)[:top]
    ]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models")
    ap.add_argument("port", type=int)
    ap.add_argument("--expect-under", required=True)
    ap.add_argument("--ctrl-c", action="store_true")
    ap.add_argument("--probe")
    ap.add_argument("--trace", type=int, default=0, help="frames per traceback (0: off)")
    ap.add_argument("--trace-out")
    ap.add_argument("--malloc-trim-every", type=float, default=0.0, help="seconds (0: never)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    if arguments.ctrl_c:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    serve(arguments)
