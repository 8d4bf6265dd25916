"""A module's score: killed / (mutants - listed equivalent ones), its survivors named with their
diffs, and the pass rule (at least THRESHOLD, no survivor that explained.py does not list)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.mutation.explained import ACCEPTED, EQUIVALENT, short_name
from benchmarks.mutation.runner import diffs

THRESHOLD = 0.90
CAUGHT = {"killed", "timeout"}


def report(name: str, result: dict) -> tuple[bool, dict]:
    """Print one module's score and unexplained survivors; (passed, summary for results.json)."""
    status = result["status"]
    killed = sum(s in CAUGHT for s in status.values())
    equivalent = sorted(k for k, s in status.items() if s not in CAUGHT and k in EQUIVALENT)
    survivors = sorted(k for k, s in status.items() if s not in CAUGHT and k not in EQUIVALENT)
    accepted = [k for k in survivors if k in ACCEPTED]
    unexplained = [k for k in survivors if k not in ACCEPTED]
    timeouts = sum(s == "timeout" for s in status.values())
    scored = len(status) - len(equivalent)
    score = killed / scored if scored else 1.0
    print(
        f"{name} ({result['module']}): {killed}/{scored} killed = {score:.1%} "
        f"({len(status)} mutants, {timeouts} of the kills by timeout, {len(equivalent)} "
        f"equivalent excluded, {len(accepted)} accepted survivors, {len(unexplained)} "
        f"unexplained, {result['seconds']} s)",
        flush=True,
    )
    changed = diffs(result["root"], result["target"], survivors)
    _print_survivors(status, accepted, unexplained, changed)
    summary = {
        "module": result["module"],
        "mutants": len(status),
        "killed": killed,
        "equivalent": equivalent,
        "timeouts": timeouts,
        "accepted": accepted,
        "survived": {key: changed[key] for key in survivors},
        "status": status,
        "score": round(score, 4),
        "seconds": result["seconds"],
    }
    return score >= THRESHOLD and not unexplained, summary


def _print_survivors(
    status: dict[str, str], accepted: list[str], unexplained: list[str], changed: dict[str, str]
) -> None:
    """Each accepted survivor with why, each unexplained one with its diff, and each mutant
    listed as equivalent that the tests now kill (the list is stale)."""
    for key in accepted:
        print(f"  survived (accepted: {ACCEPTED[key]}) {short_name(key)}")
    for key in unexplained:
        print(f"  SURVIVED [{status[key]}] {short_name(key)}")
        for line in changed[key].splitlines():
            print(f"      {line}")
    for key in sorted(k for k in EQUIVALENT if k in status and status[k] in CAUGHT):
        print(f"  listed as equivalent but killed (remove from EQUIVALENT): {key}")


def rescore(paths: list[Path]) -> int:
    """Print each module of earlier results files scored against EQUIVALENT and ACCEPTED."""
    ok = True
    for path in paths:
        for name, summary in json.loads(path.read_text()).items():
            survived = [*summary["survived"], *summary.get("equivalent", [])]
            survivors = [k for k in survived if k not in EQUIVALENT]
            equivalent = len(survived) - len(survivors)
            unexplained = [k for k in survivors if k not in ACCEPTED]
            scored = summary["mutants"] - equivalent
            score = summary["killed"] / scored if scored else 1.0
            ok &= score >= THRESHOLD and not unexplained
            print(
                f"{path.name}: {name}: {summary['killed']}/{scored} = {score:.1%} "
                f"({summary['mutants']} mutants, {equivalent} equivalent, "
                f"{len(survivors) - len(unexplained)} accepted, {len(unexplained)} unexplained)"
            )
            for key in unexplained:
                print(f"  {short_name(key)}")
    return 0 if ok else 1
