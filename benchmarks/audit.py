"""The published advisories of every installed dependency (pip-audit), summed up for `make lint`.

    python -m benchmarks.audit [--json build/pip-audit.json]

Runs pip-audit over this venv (the editable flaxdigits left out) and prints each known
vulnerability with its fix, then one line: how many dependencies were audited and how many could
not be (pip-audit asks PyPI's per-release JSON API; where only the package index is reachable,
as on machines with no other network, every dependency is skipped and the line says so instead
of passing in silence). Exit 1 when any vulnerability is known, else 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 180  # the whole audit; each request to the advisory service gets REQUEST_TIMEOUT_S
REQUEST_TIMEOUT_S = 5


def run_pip_audit(out: Path) -> dict | None:
    """pip-audit's JSON report of this interpreter's environment (None: it ran out of time)."""
    pip_audit = Path(sys.executable).with_name("pip-audit")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    argv = [str(pip_audit), "--progress-spinner", "off", "--skip-editable", "--format", "json"]
    argv += ["--timeout", str(REQUEST_TIMEOUT_S), "-o", str(out)]
    try:
        done = subprocess.run(  # noqa: S603 - the venv's own pip-audit, fixed arguments
            argv, capture_output=True, text=True, check=False, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return None
    if not out.is_file():
        raise SystemExit(f"audit: pip-audit wrote no report ({done.stderr.strip()[-500:]})")
    return json.loads(out.read_text())


def summary(report: dict) -> tuple[list[str], int]:
    """(lines to print, exit status) for a pip-audit JSON report."""
    deps = report.get("dependencies", [])
    skipped = [d for d in deps if "skip_reason" in d]
    found = [(d, v) for d in deps for v in d.get("vulns", [])]
    lines = [
        f"audit: {d['name']} {d.get('version', '?')}: {v['id']} "
        f"(fixed in {', '.join(v.get('fix_versions', [])) or 'no release yet'})"
        for d, v in found
    ]
    audited = len(deps) - len(skipped)
    line = f"audit: {len(found)} known vulnerabilities in {audited} audited dependencies"
    if skipped:
        line += (
            f"; {len(skipped)} could not be audited here (the advisory service did not answer "
            f"for them: {skipped[0]['skip_reason']})"
        )
    return [*lines, line], 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    """Audit, print the summary, return its status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="build/pip-audit.json", help="where the report goes")
    args = parser.parse_args(argv)
    report = run_pip_audit(Path(args.json))
    if report is None:
        print(f"audit: pip-audit did not finish within {TIMEOUT_S} s: nothing was audited")
        return 0
    lines, status = summary(report)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
