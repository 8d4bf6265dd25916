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


def _float32_only(results: dict) -> dict:
    """The committed results as a run from before the bfloat16 rows wrote them: float32 training
    and peer rows, one floor."""
    r = json.loads(json.dumps(results))
    for table in ("training", "peer"):
        r[table] = {k: v for k, v in r[table].items() if not k.endswith("/bfloat16")}
    r["floor"].pop("bfloat16", None)
    return r


def _with_bfloat16(results: dict) -> dict:
    """The committed results' float32 rows with a bfloat16 row beside each, the PyTorch peer
    under autocast beside its float32 run (faster for the CNN at batch 128), and a bfloat16
    floor."""
    r = _float32_only(results)
    for key in list(r["training"]):
        r["training"][f"{key}/bfloat16"] = dict(r["training"][key])
        peer = r["peer"][key]
        faster = 0.5 if key == "cnn/128" else 2.0
        r["peer"][f"{key}/bfloat16"] = dict(
            peer, seconds_per_epoch=peer["seconds_per_epoch"] * faster
        )
    f = r["floor"]
    r["floor"]["bfloat16"] = {
        "matmul_gflops": 4 * f["matmul_gflops"],
        "matmul_gflops_samples": [4 * s for s in f["matmul_gflops_samples"]],
        **{
            name: dict(f[name], floor_seconds_per_epoch=f[name]["floor_seconds_per_epoch"] / 4)
            for name in ("mlp", "cnn")
        },
    }
    return r


def _table_rows(page: str, heading: str) -> list[list[str]]:
    """The cells of each body row of the first table after heading."""
    section = page.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows[2:]]


def test_training_rows_show_both_precisions_against_pytorchs_fastest_mode():
    r = _with_bfloat16(json.loads(RESULTS.read_text()))
    rows = _table_rows(to_markdown(r), "## Training")
    assert [(row[0], row[1], row[2]) for row in rows[:2]] == [
        ("MLP", "float32", "32"),
        ("MLP", "bfloat16", "32"),
    ]
    assert len(rows) == 12
    cnn128 = {row[1]: row for row in rows if row[0] == "CNN" and row[2] == "128"}
    peer_f32 = r["peer"]["cnn/128"]["seconds_per_epoch"]
    fastest = r["peer"]["cnn/128/bfloat16"]["seconds_per_epoch"]  # autocast, half of float32's
    ours = r["training"]["cnn/128"]["seconds_per_epoch"]
    assert cnn128["float32"][-3:] == [
        f"{peer_f32:.2f}",
        f"{fastest:.2f} (autocast bf16)",
        f"{fastest / ours:.2f}×",
    ]
    mlp32 = rows[0]  # float32 is PyTorch's fastest mode there
    assert mlp32[-2] == f"{r['peer']['mlp/32']['seconds_per_epoch']:.2f} (float32)"


def test_the_floor_is_stated_for_each_model_in_each_precision():
    r = _with_bfloat16(json.loads(RESULTS.read_text()))
    page = to_markdown(r)
    rows = _table_rows(page, "## Compute floor")
    assert [(row[0], row[1]) for row in rows] == [
        ("MLP", "float32"),
        ("MLP", "bfloat16"),
        ("CNN", "float32"),
        ("CNN", "bfloat16"),
    ]
    bf16 = r["floor"]["bfloat16"]
    cnn = rows[3]
    assert cnn[2] == f"{bf16['matmul_gflops']:.1f}"
    assert cnn[4] == f"{bf16['cnn']['floor_seconds_per_epoch']:.2f}"
    assert (
        f"bfloat16 matmul rate (XLA, 1024×1024, float32 sums): {bf16['matmul_gflops']:.1f}" in page
    )


def test_results_of_before_the_bfloat16_rows_still_render():
    page = to_markdown(_float32_only(json.loads(RESULTS.read_text())))
    rows = _table_rows(page, "## Training")
    assert len(rows) == 6 and {row[1] for row in rows} == {"float32"}
    assert all(row[-2].endswith("(float32)") for row in rows)
