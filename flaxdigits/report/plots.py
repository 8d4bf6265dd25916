"""Plots of the robustness report (the JSON `flaxdigits robustness` writes): accuracy against
the level of a distortion, one line per model. Report layer: it reads the report, never the
serve code, and imports matplotlib only when called.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from flaxdigits.core.atomic import write_bytes_atomic

SCHEMA = "flaxdigits.robustness.v1"  # what flaxdigits/evaluation/robustness.py writes
PLOTTED = ("rotation", "thickness")


def plot(report: dict, out_dir, distortions: Sequence[str] = PLOTTED) -> list[Path]:
    """Write out_dir/robustness_<distortion>.png for each distortion; returns the paths.

    Raises ValueError for a report of another schema or without one of the distortions.
    """
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} report")
    missing = [name for name in distortions if name not in report["grid"]]
    if missing:
        raise ValueError(f"the report has no {missing} (it holds {sorted(report['grid'])})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A colour per model and recipe; its int8 file dashed, in the same colour.
    kinds = list(dict.fromkeys((m["model"], m["recipe"]) for m in report["models"].values()))
    written = []
    for name in distortions:
        spec = report["grid"][name]
        fig, ax = plt.subplots(figsize=(7, 4.4))
        for label, model in report["models"].items():
            accuracy = [100 * a for a in model["accuracy"][name]]
            color = f"C{kinds.index((model['model'], model['recipe'])) % 10}"
            style = "--" if model["variant"] == "int8" else "-"
            ax.plot(spec["levels"], accuracy, style, color=color, marker="o", ms=4, label=label)
        ax.set_xlabel(f"{name} ({spec['unit']})")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"Accuracy vs {name}: {report['n']} MNIST test digits, served preprocessing")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(write_bytes_atomic(Path(out_dir) / f"robustness_{name}.png", buf.getvalue()))
    return written
