"""The command: which modules, how many jobs, which commits; the results file; the exit status."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import benchmarks.mutation
from benchmarks.mutation.modules import MODULES
from benchmarks.mutation.runner import run
from benchmarks.mutation.score import report, rescore
from benchmarks.mutation.stage import STAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mutation",
        description=benchmarks.mutation.__doc__.splitlines()[0],
    )
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"of {', '.join(MODULES)}")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="keep build/mutation/MODULE")
    parser.add_argument("--rev", help="mutate the package as in commit REV (tests: working tree)")
    parser.add_argument("--tests-rev", help="the tests as in commit REV (a before score)")
    parser.add_argument("--sample", type=int, help="override the module's sampling (1: all)")
    parser.add_argument(
        "--rescore",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="re-score earlier results against today's EQUIVALENT / ACCEPTED lists (no run)",
    )
    parser.add_argument("--out", type=Path, default=STAGE / "results.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run and score the modules asked for (all by default); 1 if any fails the pass rule."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.rescore:
        return rescore(args.rescore)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}: choose from {', '.join(MODULES)}")
    ok, summaries = True, {}
    for name in args.modules or list(MODULES):
        module = MODULES[name]
        if args.sample:
            module = dataclasses.replace(module, sample=args.sample)
        result = run(name, module, args.jobs, args.rev, args.tests_rev)
        passed, summaries[name] = report(name, result)
        ok &= passed
        if not args.keep:
            shutil.rmtree(result["root"], ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summaries, indent=2) + "\n")
    return 0 if ok else 1
