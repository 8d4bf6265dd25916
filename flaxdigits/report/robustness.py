"""The report's robustness sections: the robust recipe's runs, accuracy on deformed digits
(reports/robustness.json from `flaxdigits robustness`) and on drawn canvases
(reports/canvas_accuracy*.json from `flaxdigits canvas-eval`), as tables and curves.

It reads files only: the measurements are made through the exported models by their own
commands, and a section whose file is missing says which command makes it. The curves
(accuracy vs rotation, vs stroke thickness) come from robustness_plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.core.contract import MODEL_NAMES
from flaxdigits.report import plots as robustness_plots

# The seed report's claim in numbers: (label, distortion, levels averaged).
HEADLINE = (
    ("rotated ±30°", "rotation", (-30.0, 30.0)),
    ("rotated ±45°", "rotation", (-45.0, 45.0)),
    ("slanted ±0.3", "slant", (-0.3, 0.3)),
    ("strokes −0.5 px", "thickness", (-0.5,)),
    ("strokes +2.5 px", "thickness", (2.5,)),
)
# Thinning by a whole pixel per edge erases thin MNIST strokes altogether (the robustness report
# counts those canvases as refused), so "across the thickness range" is taken from here up.
THICKNESS_FROM = -0.5
CANVAS_FILES = {"robust": "canvas_accuracy.json", "seed": "canvas_accuracy_seed.json"}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def headline(model: dict[str, Any], grid: dict[str, Any]) -> dict[str, float]:
    """The headline accuracies of one model entry of robustness.json."""
    out = {"clean": model["test_accuracy_28x28"]}
    for label, name, levels in HEADLINE:
        accuracy, known = model["accuracy"][name], grid[name]["levels"]
        out[label] = float(np.mean([accuracy[known.index(v)] for v in levels]))
    thickness = zip(grid["thickness"]["levels"], model["accuracy"]["thickness"], strict=True)
    out["thickness worst"] = min(a for level, a in thickness if level >= THICKNESS_FROM)
    return out


def robust_runs_table(seed_runs: Path, robust_runs: Path) -> list[str]:
    """Test accuracy and cost of each recipe's runs, MLP and CNN side by side."""
    rows = []
    for recipe, root in (("seed", seed_runs), ("robust", robust_runs)):
        metrics = {n: _read(Path(root) / n / "metrics.json") for n in MODEL_NAMES}
        if any(m is None for m in metrics.values()):
            continue
        cells = [
            f"{100 * metrics[n]['test_accuracy']:.2f}% ({metrics[n]['epochs']} epochs, "
            f"batch {metrics[n]['batch_size']}, {metrics[n]['seconds_per_epoch']:.1f} s/epoch)"
            for n in MODEL_NAMES
        ]
        rows.append(f"| {recipe} | " + " | ".join(cells) + " |")
    if not rows:
        return ["No robust-recipe runs yet: `make train`.", ""]
    return ["| Recipe | MLP test accuracy | CNN test accuracy |", "|---|---:|---:|", *rows, ""]


def robustness_lines(out: Path) -> list[str]:
    """The headline table and the full tables of robustness.json, or how to make it."""
    report = _read(Path(out) / "robustness.json")
    if report is None:
        return ["No measurement yet: `flaxdigits robustness` (`make robustness`).", ""]
    grid = report["grid"]
    models = report["models"]
    keys = ["clean", *(label for label, _, _ in HEADLINE), "thickness worst"]
    worst = f"thickness worst is the lowest from {THICKNESS_FROM:+g} px per edge up"
    lines = [
        f"Each of the {report['n']:,} test digits deformed on a canvas, then re-centred by the "
        f"served `mnist` preprocessing, then read by the exported ONNX model ({worst}).",
        "",
        "| Model (recipe, variant) | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for label, model in models.items():
        values = headline(model, grid)
        lines.append(f"| {label} | " + " | ".join(f"{100 * values[k]:.2f}%" for k in keys) + " |")
    lines += ["", "Every level:", "", report["table"], ""]
    return lines


def canvas_lines(out: Path) -> list[str]:
    """The canvas-accuracy tables of both recipes' models."""
    lines = []
    for recipe, name in CANVAS_FILES.items():
        report = _read(Path(out) / name)
        if report is None:
            lines += [f"{recipe} recipe: no measurement yet (`make canvas-eval`).", ""]
            continue
        lines += [f"{recipe} recipe, {report['n']:,} canvases:", "", report["table"], ""]
    return lines


def sections(out: Path, seed_runs: Path, robust_runs: Path | None) -> list[str]:
    """The markdown of the robustness sections; the curves are written beside it (PNG)."""
    lines = ["## Robust recipe", ""]
    if robust_runs is not None:
        lines += robust_runs_table(seed_runs, robust_runs)
    lines += ["## Robustness to deformed input", "", *robustness_lines(out)]
    report = _read(Path(out) / "robustness.json")
    if report is not None:
        lines += [f"![{p.name}]({p.name})" for p in robustness_plots.plot(report, out)]
        lines.append("")
    lines += ["## Accuracy on drawn canvases", "", *canvas_lines(out)]
    return lines
