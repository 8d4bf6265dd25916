"""The report's robustness sections: the robust recipe's runs, accuracy on deformed digits
(reports/robustness.json from `flaxdigits robustness`) and on drawn canvases
(reports/canvas_accuracy*.json from `flaxdigits canvas-eval`), as tables and curves.

It reads files only: the measurements are made through the exported models by their own
commands, and a section whose file is missing says which command makes it. Every figure quoted
comes with the sha256 of the model file it was measured on (as the report records it); a report
that names no bytes (made before reports recorded them) is quoted for nothing and says to measure
again. The curves (accuracy vs rotation, vs stroke thickness) come from robustness_plots.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.core.contract import MODEL_NAMES
from flaxdigits.core.tables import markdown_table
from flaxdigits.report import plots as robustness_plots

# The original study's claim in numbers: (label, distortion, levels averaged).
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
ROBUSTNESS_FILE = "robustness.json"
CANVAS_FILES = {"robust": "canvas_accuracy.json", "original": "canvas_accuracy_original.json"}


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


def robust_runs_table(original_runs: Path, robust_runs: Path) -> list[str]:
    """Test accuracy and cost of each recipe's runs, MLP and CNN side by side."""
    rows = []
    for recipe, root in (("original", original_runs), ("robust", robust_runs)):
        metrics = {n: _read(Path(root) / n / "metrics.json") for n in MODEL_NAMES}
        if any(m is None for m in metrics.values()):
            continue
        cells = [
            f"{100 * metrics[n]['test_accuracy']:.2f}% ({metrics[n]['epochs']} epochs, "
            f"batch {metrics[n]['batch_size']}, {metrics[n]['seconds_per_epoch']:.1f} s/epoch)"
            for n in MODEL_NAMES
        ]
        rows.append([recipe, *cells])
    if not rows:
        return ["No robust-recipe runs yet: `make train`.", ""]
    header = ["Recipe", "MLP test accuracy", "CNN test accuracy"]
    return [markdown_table(header, rows), ""]


def read_measurements(out: Path) -> dict[str, dict[str, Any] | None]:
    """{file name: report} of robustness.json and each recipe's canvas report in out, None for
    one that is missing or unreadable."""
    names = [ROBUSTNESS_FILE, *CANVAS_FILES.values()]
    return {name: _read(Path(out) / name) for name in names}


def robustness_bytes(report: dict[str, Any]) -> dict[str, str] | None:
    """{model label: sha256 of the file measured} of robustness.json; None when a model entry
    names no bytes (a report made before they were recorded)."""
    digests = {label: m.get("sha256") for label, m in report["models"].items()}
    return digests if all(isinstance(d, str) for d in digests.values()) else None


def canvas_bytes(report: dict[str, Any]) -> dict[str, str] | None:
    """{model: sha256 of the file measured} of a canvas report; None when a model's bytes are
    not named (a report made before they were recorded)."""
    named = report.get("sha256") or {}
    digests = {stem: named.get(stem) for stem in report["accuracy"]}
    return digests if all(isinstance(d, str) for d in digests.values()) else None


def measured_files(measurements: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, str]]:
    """{report file: {model: sha256}}: the bytes behind every figure the report quotes (a
    report that names no bytes is not quoted, and not here)."""
    found = {}
    for name, report in measurements.items():
        digests = None
        if report is not None:
            digests = (robustness_bytes if name == ROBUSTNESS_FILE else canvas_bytes)(report)
        if digests is not None:
            found[name] = digests
    return found


def bytes_line(digests: dict[str, str]) -> str:
    return (
        "Files measured, by sha256: "
        + ", ".join(f"{model} `{digest[:16]}…`" for model, digest in digests.items())
        + "."
    )


def rerun_line(name: str, command: str, make: str) -> str:
    return (
        f"{name} names no model bytes (measured before reports recorded the sha256 of each "
        f"model file), so none of its figures is quoted: re-run `{command}` (`{make}`)."
    )


def robustness_lines(report: dict[str, Any] | None) -> list[str]:
    """The headline table and the full tables of robustness.json, or how to make it."""
    if report is None:
        return ["No measurement yet: `flaxdigits robustness` (`make robustness`).", ""]
    digests = robustness_bytes(report)
    if digests is None:
        return [rerun_line(ROBUSTNESS_FILE, "flaxdigits robustness", "make robustness"), ""]
    keys = ["clean", *(label for label, _, _ in HEADLINE), "thickness worst"]
    rows = []
    for label, model in report["models"].items():
        values = headline(model, report["grid"])
        rows.append([label, *(f"{100 * values[k]:.2f}%" for k in keys)])
    worst = f"thickness worst is the lowest from {THICKNESS_FROM:+g} px per edge up"
    return [
        f"Each of the {report['n']:,} test digits deformed on a canvas, then re-centred by the "
        f"served `mnist` preprocessing, then read by the exported ONNX model ({worst}).",
        "",
        markdown_table(["Model (recipe, variant)", *keys], rows),
        "",
        bytes_line(digests),
        "",
        "Every level:",
        "",
        report["table"],
        "",
    ]


def canvas_lines(measurements: dict[str, dict[str, Any] | None]) -> list[str]:
    """The canvas-accuracy tables of both recipes' models."""
    lines = []
    for recipe, name in CANVAS_FILES.items():
        report = measurements[name]
        if report is None:
            lines += [f"{recipe} recipe: no measurement yet (`make canvas-eval`).", ""]
            continue
        digests = canvas_bytes(report)
        if digests is None:
            lines += [
                f"{recipe} recipe: "
                + rerun_line(name, "flaxdigits canvas-eval", "make canvas-eval"),
                "",
            ]
            continue
        lines += [f"{recipe} recipe, {report['n']:,} canvases:", "", report["table"], ""]
        lines += [bytes_line(digests), ""]
    return lines


def sections(
    measurements: dict[str, dict[str, Any] | None],
    out: Path,
    original_runs: Path,
    robust_runs: Path | None,
) -> list[str]:
    """The markdown of the robustness sections from read_measurements(out); the curves are
    written beside it in out (PNG). A figure is quoted only from a report naming its bytes."""
    lines = ["## Robust recipe", ""]
    if robust_runs is not None:
        lines += robust_runs_table(original_runs, robust_runs)
    report = measurements[ROBUSTNESS_FILE]
    lines += ["## Robustness to deformed input", "", *robustness_lines(report)]
    if report is not None and robustness_bytes(report) is not None:
        lines += [f"![{p.name}]({p.name})" for p in robustness_plots.plot(report, out)]
        lines.append("")
    lines += ["## Accuracy on drawn canvases", "", *canvas_lines(measurements)]
    return lines
