"""mutmut run over one staged module: each selected mutant's status, and survivors' diffs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.mutation.modules import Module
from benchmarks.mutation.stage import stage


def run(
    name: str, module: Module, jobs: int, rev: str | None = None, tests_rev: str | None = None
) -> dict:
    """Run mutmut over one module; its results as {mutant: status}, its time and staging tree."""
    root = stage(name, module, rev, tests_rev)
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    cmd = [mutmut, "run", "--max-children", str(jobs), *module.globs()]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False)  # noqa: S603
    seconds = time.monotonic() - started
    meta = root / "mutants" / (module.target + ".meta")
    if proc.returncode != 0 or not meta.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise SystemExit(f"{name}: mutmut failed (exit {proc.returncode}):\n{tail}")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    codes = {k: v for k, v in codes.items() if module.selected(k)}
    status = {k: _status(v) for k, v in sorted(codes.items(), key=lambda kv: _order(kv[0]))}
    return {
        "module": module.source,
        "target": module.target,
        "seconds": round(seconds),
        "status": status,
        "root": root,
    }


def _order(key: str) -> tuple[str, int]:
    func, _, number = key.rpartition("__mutmut_")
    return func, int(number)


def _status(code: int | None) -> str:
    if code in (1, 3):
        return "killed"
    if code == 0:
        return "survived"
    if code in (36, 24, 152, 255, -24):
        return "timeout"  # the mutant made the tests hang: caught
    if code is None:
        return "not checked"
    if code in (5, 33):
        return "no tests"
    return f"exit {code}"


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
names, path = json.load(sys.stdin)
print(json.dumps({name: get_diff_for_mutant(name, path=path) for name in names}))
"""


def diffs(root: Path, target: str, mutants: list[str]) -> dict[str, str]:
    """{mutant: its changed lines}, from mutmut's own diff (one process for all of them)."""
    if not mutants:
        return {}
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-c", _DIFFS],
        cwd=root,
        input=json.dumps([mutants, target]),
        capture_output=True,
        text=True,
        check=True,
    )
    out = {}
    for name, text in json.loads(proc.stdout).items():
        lines = text.splitlines()[2:]  # past the --- / +++ header
        out[name] = "\n".join(ln for ln in lines if ln[:1] in "+-")
    return out
