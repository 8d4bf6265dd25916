"""BENCHMARKS.md is generated only: it is exactly what `make bench` writes from
benchmarks/results.json, and it names the machine, commit and date of the run its figures are of.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench import machine
from benchmarks.bench.main import main
from benchmarks.bench.markdown import to_markdown

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"


def test_benchmarks_md_is_the_generators_output_of_the_committed_results():
    results = json.loads(RESULTS.read_text())
    assert (ROOT / "BENCHMARKS.md").read_text() == to_markdown(results), (
        "BENCHMARKS.md was edited by hand: put notes in docs/experiments/, and rewrite it with "
        "`.venv/bin/python -m benchmarks.bench --rewrite`"
    )


def test_the_page_names_the_machine_commit_and_date_of_its_run():
    results = json.loads(RESULTS.read_text())
    m = results["machine"]
    header = to_markdown(results).split("\n## ", 1)[0]
    assert m["cpu"] in header and f"Commit {m['commit']}." in header and m["date"] in header
    del m["commit"]  # a run from before the commit was recorded says so
    assert "Commit not recorded." in to_markdown(results)


def test_a_run_records_its_commit_and_rewrite_measures_nothing(tmp_path):
    assert machine.commit() and machine.commit(tmp_path) is None  # this checkout; no repository
    (tmp_path / "results.json").write_text(RESULTS.read_text())
    out = tmp_path / "BENCHMARKS.md"
    assert main(["--rewrite", "--out", str(tmp_path), "--markdown", str(out)]) == 0
    assert out.read_text() == to_markdown(json.loads(RESULTS.read_text()))
