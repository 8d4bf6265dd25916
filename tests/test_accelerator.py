"""The accelerator command (python -m benchmarks.accelerator, make accelerator-bench) on the CPU
with a tiny budget: every model, recipe and precision measured, the device named, its table
written into BENCHMARKS.md by the generator beside the figures already there. Behaviour only:
one epoch on 1,000 real MNIST images claims no accuracy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import pytest

from benchmarks import accelerator
from benchmarks.bench.main import kept
from benchmarks.bench.markdown import to_markdown

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results.json"


def _section(page: str) -> str:
    return page.split("\n## Accelerators", 1)[1].split("\n## ", 1)[0]


@pytest.mark.slow  # trains 8 tiny jobs on real MNIST (compilation is most of it)
def test_the_accelerator_command_measures_every_model_recipe_and_precision(mnist, tmp_path):
    shutil.copy(RESULTS, tmp_path / "results.json")  # make bench's figures, to be kept
    page = tmp_path / "BENCHMARKS.md"
    argv = ["--epochs", "1", "--limit", "1000", "--out", str(tmp_path), "--markdown", str(page)]
    assert accelerator.main(argv, data=mnist) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    before = json.loads(RESULTS.read_text())
    assert results["training"] == before["training"] and results["floor"] == before["floor"]
    kind = jax.devices()[0].device_kind
    (measured,) = results["accelerator"].values()
    assert measured["device"] == {"platform": "cpu", "kind": kind, "count": jax.device_count()}
    assert sorted(measured["rows"]) == sorted(
        f"{recipe}/{model}/{precision}"
        for recipe in ("original", "robust")
        for model in ("mlp", "cnn")
        for precision in ("float32", "bfloat16")
    )
    for row in measured["rows"].values():
        assert row["epochs"] == 1
        assert row["seconds_per_epoch"] > 0 and row["images_per_second"] > 0
        assert row["compile_seconds"] > 0 and 0 <= row["test_accuracy"] <= 1
    assert page.read_text() == to_markdown(results)
    section = _section(page.read_text())
    assert f"Device: {kind} (cpu, " in section and "## Training" in page.read_text()
    assert len([line for line in section.splitlines() if line.startswith("| ")]) == 1 + 8
    assert "No GPU or TPU figures yet" in section  # a CPU table is not a GPU one
    assert kept(tmp_path) == {"accelerator": results["accelerator"]}  # make bench keeps it


def test_a_page_with_a_gpus_table_names_it_and_drops_the_note():
    results = json.loads(RESULTS.read_text())
    row = {
        "epochs": 5, "batch_size": 32, "seconds_per_epoch": 0.5, "images_per_second": 1e5,
        "compile_seconds": 2.0, "test_accuracy": 0.987, "best_test_accuracy": 0.987,
        "seconds_to_seed_accuracy": 1.5, "epochs_to_seed_accuracy": 3,
    }  # fmt: skip
    results["accelerator"] = {
        "gpu: NVIDIA H100": {
            "device": {"platform": "gpu", "kind": "NVIDIA H100", "count": 1},
            "machine": results["machine"],
            "train_images": 60000,
            "test_images": 10000,
            "rows": {"original/cnn/bfloat16": row},
        }
    }
    section = _section(to_markdown(results))
    assert "NVIDIA H100 (gpu, 1 device)" in section and "No GPU or TPU" not in section
    assert (
        "| CNN | original | bfloat16 | 32 | 5 | 0.50 | 100,000 | 2.00 | 98.70% | 1.5 s (3) |"
        in (section)
    )
