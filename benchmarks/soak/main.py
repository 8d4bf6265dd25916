"""The command: arguments; the soak (the bounded stores filled, an honest-only phase, then honest
beside hostile) or one issue's rows; the JSON report and the plot."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import benchmarks.soak
from benchmarks import loadtest
from benchmarks.soak.fill import fill_stores
from benchmarks.soak.phases import run_phase
from benchmarks.soak.plot import WINDOW, plot
from benchmarks.soak.report import build_report, checks, figures_of
from benchmarks.soak.rows18 import measure_rows
from benchmarks.soak.rows34 import run_rows_34
from benchmarks.soak.sampling import Counter, Sampler
from benchmarks.soak.serving import Checkout, start_server
from flaxdigits.core.atomic import write_json_atomic
from flaxdigits.serve.page import allocator


def _parser() -> argparse.ArgumentParser:
    doc = benchmarks.soak.__doc__.splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=doc)
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
    parser.add_argument(
        "--no-fill",
        dest="fill",
        action="store_false",
        help="skip filling the bounded stores first (the RSS slope then counts them filling)",
    )
    parser.add_argument(
        "--trace",
        type=int,
        default=0,
        metavar="FRAMES",
        help="tracemalloc in the server from its start (slower: a diagnostic run, not the "
        "figures): a snapshot every --trace-every requests, what grew by source line between",
    )
    parser.add_argument("--trace-every", type=int, default=10_000, help="requests between marks")
    parser.add_argument(
        "--malloc-trim-every",
        type=float,
        default=0.0,
        metavar="S",
        help="an experiment: malloc_trim(0) in the server every S seconds (the page never trims: "
        "such a run's RSS is not the page's)",
    )
    parser.add_argument(
        "--allocator",
        choices=allocator.CHOICES,
        default="auto",
        help="the server's malloc, as `flaxdigits serve --allocator` (auto: jemalloc where the "
        "system has it, as the page runs; system: glibc's, to compare)",
    )
    return parser


def main(argv=None) -> int:
    """Run the soak (exit 1 when a check fails) or, with --rows, one issue's rows."""
    args = _parser().parse_args(argv)
    if args.before and not args.rows:
        raise SystemExit("--before serves an older checkout for --rows only")
    models, out = Path(args.models), Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    files = [p for p, _ in loadtest.drawings(work, 20)]
    answers = loadtest.offline_answers(models, files)
    if args.rows:
        checkout = Checkout.before(args.before.resolve(), work) if args.before else Checkout()
        rows = run_rows(args.rows, models, work, files, answers, checkout, args.only)
        write_json_atomic(out, {"server": str(args.before or "this checkout"), "rows": rows})
        return 0
    report, phase_times = soak(args, models, work, files, answers)
    write_json_atomic(out, report)
    plot(report["samples"], phase_times, out.with_suffix(".png"))
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
    return 0 if all(report["checks"].values()) else 1


def run_rows(issue, models, work, files, answers, checkout, only) -> list[dict]:
    """Issue 34's rows, each on a fresh page; or issue 18's, all on one."""
    if issue == "34":
        return run_rows_34(models, work, files, answers, checkout, only)
    tmp = work / "server-tmp"
    tmp.mkdir()
    served = start_server(models, tmp, work / "server.log", checkout)
    try:
        rows = measure_rows(served, files, answers)
    finally:
        served.stop(timeout=30)
    print(json.dumps(rows, indent=1))
    return rows


def soak(args, models, work, files, answers) -> tuple[dict, dict]:
    """Both phases against one page, sampled every second: (the report, the phases' times)."""
    tmp = work / "server-tmp"
    tmp.mkdir()
    served = start_server(
        models,
        tmp,
        work / "server.log",
        probe=True,
        trace=args.trace,
        malloc_trim_every=args.malloc_trim_every,
        allocator=args.allocator,
    )
    counter = Counter()
    sampler = Sampler(served, counter, mark_every=args.trace_every if args.trace else 0)
    sampler.start()
    times, fill = {}, None
    try:
        if args.fill:
            t = sampler.now()
            fill = fill_stores(served)
            times["stores filled"] = (t, sampler.now())
        phases = run_phases(args, served, files, answers, counter, sampler, times)
        time.sleep(2)
        snapshots = memory_marks(served, sampler.marks)
    finally:
        sampler.stop.set()
        sampler.join()
        alive = served.proc.poll() is None
        trim = served.trim() if alive else None  # after the last sample: it lowers RSS
        served.stop(timeout=30)
    samples = sampler.samples
    log_lines = served.log.read_text(errors="replace").splitlines()
    figures = figures_of(samples, times["honest + hostile"][0])
    if figures["window"]:
        times[WINDOW] = tuple(figures["window"]["t"])
    checked = checks(figures, *phases, alive, log_lines, fill)
    report = build_report(counter(), phases, samples, figures, served.log, log_lines, checked)
    report |= {"fill": fill, "allocator": served.allocator}
    report["phase_times_s"] = times  # (start, end) of each, in the samples' seconds: the plot's
    report["rss_mib"]["malloc_trim_after_the_run"] = trim
    if snapshots:
        report["tracemalloc"] = snapshots
    if args.malloc_trim_every:
        report["experiment"] = (
            f"malloc_trim(0) every {args.malloc_trim_every:g} s in the server: its RSS is not "
            "the page's"
        )
    return report, times


def memory_marks(served, marks, wait_s: float = 120.0) -> list[dict]:
    """The server's tracemalloc snapshots, each with the requests done at its mark (waits for
    the last: a snapshot of a large heap takes seconds)."""
    deadline = time.monotonic() + wait_s
    while len(served.snapshots()) < len(marks) and time.monotonic() < deadline:
        time.sleep(1)
    return [{**mark, **snap} for mark, snap in zip(marks, served.snapshots(), strict=False)]


def run_phases(args, served, files, answers, counter, sampler, times):
    """The honest-only baseline, then honest beside hostile: their results; each phase's
    (start, end) in times."""
    runs = (
        ("honest only", 0, args.baseline),
        ("honest + hostile", args.hostile, args.requests - args.baseline),
    )
    results = []
    for name, hostile, requests in runs:
        t = sampler.now()
        results.append(
            run_phase(
                served.url,
                served.port,
                files,
                answers,
                honest=args.honest,
                hostile=hostile,
                until_requests=requests,
                counter=counter,
            )
        )
        times[name] = (t, sampler.now())
    return tuple(results)
