"""The report's section on calibration and "not a digit": reports/answers.json (from `flaxdigits
answers`) as tables, a reliability diagram of the served float files before and after
calibration, the drawing rule (mlp, cnn and the gate together) where a gate was measured, the
picture of what still passes, and how often real digits are rejected on the drawn canvases and
the distorted grid (the canvas reports and robustness.json, read through report/robustness.py).

It reads files only, like report/robustness.py: a missing file says which command makes it, and
a figure is quoted only from a report that names the sha256 of the model file it measured.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.core.atomic import write_bytes_atomic
from flaxdigits.core.tables import markdown_table
from flaxdigits.evaluation import answers as evaluation_answers
from flaxdigits.evaluation import drawing_answers
from flaxdigits.report import robustness as report_robust

ANSWERS_FILE = "answers.json"
PASSED_PICTURE = "answers_passed.png"
RELIABILITY_PICTURE = "answers_reliability.png"
SERVED = ("mlp.onnx", "cnn.onnx")  # the served robust float files, as answers.json labels them
COMMAND = "flaxdigits answers --models models models/original --out reports/answers.json"
MAKE = "make answers"
OLD = "not counted (an older report: re-run it)"  # a report from before the rejections were counted


def read(out: Path) -> dict[str, Any] | None:
    """reports/answers.json in out; None when it is missing or unreadable."""
    try:
        return json.loads((Path(out) / ANSWERS_FILE).read_text())
    except (OSError, ValueError):
        return None


def answers_bytes(report: dict[str, Any]) -> dict[str, str] | None:
    """{file label: sha256 of the file measured}; None when an entry names no bytes."""
    digests = {label: m.get("sha256") for label, m in report["models"].items()}
    return digests if all(isinstance(d, str) for d in digests.values()) else None


def _pct(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def files_table(report: dict[str, Any]) -> str:
    """One row per file: temperature, ECE before → after, the rule's answers on the test digits,
    the non-digits it catches and the AUROC (the measurement's own table)."""
    return evaluation_answers.format_table(report)


def kinds_table(report: dict[str, Any]) -> str:
    """Per file, then per drawing rule, AUROC and the share caught against each held-out kind."""
    kinds = sorted(report["heldout"]["kinds"])
    named = list(report["models"].items())
    named += [
        (drawing_answers.row_label(label, d), d)
        for label, d in (report.get("drawing_rule") or {}).items()
    ]
    rows = [
        [
            label,
            *(f"{m['auroc'][k]:.4f}" for k in kinds),
            *(_pct(m["caught"][k], 1) for k in kinds),
        ]
        for label, m in named
    ]
    header = ["file", *(f"AUROC, {k}" for k in kinds), *(f"caught, {k}" for k in kinds)]
    return markdown_table(header, rows, align="l" + "r" * 2 * len(kinds))


def drawing_lines(report: dict[str, Any]) -> list[str]:
    """The drawing rule in one paragraph and its figures, one row per gate file; [] for a report
    measured without a gate."""
    rules = report.get("drawing_rule") or {}
    if not rules:
        return []
    drawn = report["canvases"]
    rows = [
        [
            drawing_answers.row_label(label, d),
            _pct(d["rule"]["not_a_digit_below"]),
            _pct(d["rule"]["validation_rejected"]),
            _pct(d["test"]["not_a_digit"]),
            _pct(d["canvas"]["not_a_digit"]),
            _pct(d["caught"]["all"], 1),
            f"{d['auroc']['all']:.4f}",
        ]
        for label, d in rules.items()
    ]
    header = ["drawing rule", "'not a digit' below", "validation digits rejected"]
    header += ["test digits rejected", "canvases rejected", "non-digits caught", "AUROC"]
    return [
        "The drawing rule decides 'not a digit' for the drawing, from the served models "
        "together: mlp, cnn and the gate (a CNN trained with generated non-digits, whose own "
        "digit is never shown) each give their calibrated probabilities; the drawing's score is "
        "the smaller of the gate's confidence (its largest probability) and the largest of the "
        "three files' mean probabilities. Under a "
        "threshold fitted on the validation digits "
        "(never the test set), the drawing and every model's answer are 'not a digit'; "
        "otherwise the digits shown are the served models' own, a model's own 'not a digit' "
        f"made 'not sure'. Test digits rejected: of the {report['test_digits']:,} test digits; "
        f"canvases: the first {drawn['drawn']:,} of them drawn as canvases (the column "
        f"'canvases: not a digit' above; `{drawn['method']}` preprocessing, "
        f"{drawn['refused']:,} refused by it and left out); AUROC of the score, test digits "
        "against the held-out non-digits.",
        "",
        markdown_table(header, rows, align="lrrrrrr"),
        "",
        *distorted_lines(rules),
    ]


def distorted_lines(rules: dict[str, Any]) -> list[str]:
    """The share of distorted test digits each drawing rule rejects, one row per gate file and a
    column per distortion level; [] for a report measured before it."""
    measured = {label: d for label, d in rules.items() if d.get("distorted")}
    if not measured:
        return []
    columns = [
        (k, level) for k, v in next(iter(measured.values()))["distorted"].items() for level in v
    ]
    header = ["drawing rule", *(f"{k} {level}" for k, level in columns)]
    rows = [
        [drawing_answers.row_label(label, d), *(_pct(d["distorted"][k][lv]) for k, lv in columns)]
        for label, d in measured.items()
    ]
    return [
        f"Distorted digits rejected as 'not a digit' (the first {drawing_answers.DISTORTED:,} test "
        "digits rotated by degrees, slanted, and with strokes thickened or thinned by pixels per "
        "edge, re-centred as the page does; a digit the preprocessing refuses is left out):",
        "",
        markdown_table(header, rows, align="l" + "r" * len(columns)),
        "",
    ]


def passed_sentence(report: dict[str, Any], out: Path) -> list[str]:
    """The picture of the held-out non-digits that still pass (the float drawing rule's, else
    the served CNN's) and a sentence on what they are; [] without the picture."""
    if not (Path(out) / PASSED_PICTURE).is_file():
        return []
    label, passed = evaluation_answers.shown_passed(report)
    count, names = report["heldout"]["count"], report["heldout_names"]
    common = Counter(str(names[i]) for i in passed).most_common(5)
    most = ", ".join(f"{name} ({n})" for name, n in common) or "none"
    who = f"the {label}" if report.get("drawing_rule") else label
    return [
        f"Of the {count:,} held-out non-digits, {who} answers {len(passed):,} as a digit or "
        f"'not sure' ({_pct(len(passed) / max(1, count), 1)}); the ones it lets through most "
        f"often: {most}. The first of them, each named by what it is:",
        "",
        f"![{PASSED_PICTURE}]({PASSED_PICTURE})",
        "",
    ]


def canvas_rejections(measurements: dict[str, dict[str, Any] | None]) -> list[str]:
    """The share of drawn canvases of real digits each file answers "not a digit" (`mnist`
    preprocessing), from the canvas reports that name their bytes."""
    rows = []
    for recipe, name in report_robust.CANVAS_FILES.items():
        report = measurements.get(name)
        if report is None or report_robust.canvas_bytes(report) is None:
            continue
        if "not_a_digit" not in report:  # measured before canvas-eval counted rejections
            rows += [[f"{stem} ({recipe})", OLD] for stem in report["accuracy"]]
            continue
        for stem, by_method in report["not_a_digit"].items():
            share = (by_method or {}).get("mnist")
            rows.append([f"{stem} ({recipe})", "no answer rule" if share is None else _pct(share)])
    if not rows:
        return ["Drawn canvases: no canvas report naming its model bytes (`make canvas-eval`).", ""]
    header = ["file (recipe)", "canvases answered not a digit, `mnist`"]
    return ["Drawn canvases of test digits:", "", markdown_table(header, rows), ""]


def grid_shares(model: dict[str, Any], grid: dict[str, Any]) -> dict[str, Any]:
    """One robustness.json entry's "not a digit" shares: clean, at the headline levels (averaged
    like report/robustness.py's headline), and the worst level (strokes thinned past
    THICKNESS_FROM left out: they vanish)."""
    shares = model["not_a_digit"]
    out: dict[str, Any] = {"clean": model["not_a_digit_28x28"]}
    for label, name, levels in report_robust.HEADLINE:
        known = grid[name]["levels"]
        out[label] = float(np.mean([shares[name][known.index(v)] for v in levels]))
    worst = max(
        (share, name, level)
        for name, by_level in shares.items()
        for level, share in zip(grid[name]["levels"], by_level, strict=True)
        if not (name == "thickness" and level < report_robust.THICKNESS_FROM)
    )
    out["worst"] = worst
    return out


def grid_rejections(report: dict[str, Any] | None) -> list[str]:
    """The share of deformed test digits each file answers "not a digit", from robustness.json
    when it names its bytes."""
    if report is None or report_robust.robustness_bytes(report) is None:
        return [
            "Distorted digits: no robustness.json naming its model bytes (`make robustness`).",
            "",
        ]
    keys = ["clean", *(label for label, _, _ in report_robust.HEADLINE)]
    rows = []
    for label, model in report["models"].items():
        if "not_a_digit_28x28" not in model:  # measured before robustness counted rejections
            rows.append([label, OLD, *["n/a"] * len(keys)])
            continue
        if model["not_a_digit_28x28"] is None:
            rows.append([label, "no answer rule", *["n/a"] * len(keys)])
            continue
        values = grid_shares(model, report["grid"])
        share, name, level = values["worst"]
        worst = f"{_pct(share)} ({name} {level:g} {report['grid'][name].get('unit', '')})"
        rows.append([label, *(_pct(values[k]) for k in keys), worst.replace(" )", ")")])
    return [
        f"Deformed test digits ({report['n']:,} per level, `mnist` preprocessing) answered "
        f"not a digit (the worst level: strokes from {report_robust.THICKNESS_FROM:+g} px per "
        "edge up, as thinner ones vanish):",
        "",
        markdown_table(["Model (recipe, variant)", *keys, "worst level"], rows),
        "",
    ]


def plot_reliability(report: dict[str, Any], out: Path) -> Path | None:
    """out/answers_reliability.png: accuracy against confidence per bin, before and after
    calibration, of the served float files (SERVED); None when the report holds neither."""
    shown = [label for label in SERVED if label in report["models"]]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(shown), figsize=(5.2 * len(shown), 4.6), squeeze=False)
    for ax, label in zip(axes[0], shown, strict=True):
        m = report["models"][label]
        for when, style in (("before", "s--"), ("after", "o-")):
            bins = [b for b in m["reliability"][when] if b["count"]]
            ece = m["test"]["ece_before" if when == "before" else "ece"]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                style,
                ms=4,
                label=f"{when} calibration (ECE {100 * ece:.2f}%)",
            )
        ax.plot([0, 1], [0, 1], ":", color="gray", label="perfectly calibrated")
        ax.set_xlabel("confidence (mean per bin)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{label}: {report['test_digits']:,} test digits")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(Path(out) / RELIABILITY_PICTURE, buf.getvalue())


def _measured_lines(report: dict[str, Any], out: Path) -> list[str]:
    """The tables, the figures and the bytes of an answers.json that names them."""
    kinds = ", ".join(f"{k} {n:,}" for k, n in report["heldout"]["kinds"].items())
    bins = len(next(iter(report["models"].values()))["reliability"]["after"])
    lines = [
        f"On the {report['test_digits']:,} test digits: expected calibration error ({bins} "
        "bins) of each file's probabilities before and after its temperature, and the shares its "
        "answer rule calls 'not a digit' and 'not sure'. Against "
        f"{report['heldout']['count']:,} held-out non-digits ({kinds}: kinds training never "
        "generated): the share the rule catches as 'not a digit' and the AUROC of the "
        "confidence, digits against non-digits.",
        "",
        files_table(report),
        "",
        "Per held-out kind:",
        "",
        kinds_table(report),
        "",
        *drawing_lines(report),
    ]
    figure = plot_reliability(report, out)
    if figure is not None:
        lines += [f"![{figure.name}]({figure.name})", ""]
    lines += passed_sentence(report, out)
    return lines + [report_robust.bytes_line(answers_bytes(report) or {}), ""]


def sections(measurements: dict[str, dict[str, Any] | None], out: Path) -> list[str]:
    """The markdown of the section from read(out) and report/robustness.py's read_measurements
    (measurements[ANSWERS_FILE] the answers report); figures written beside it in out."""
    lines = ["## Confidence and 'not a digit'", ""]
    report = measurements.get(ANSWERS_FILE)
    if report is None:
        lines += [f"No measurement yet: `{COMMAND}` (`{MAKE}`).", ""]
    elif answers_bytes(report) is None:
        lines += [report_robust.rerun_line(ANSWERS_FILE, COMMAND, MAKE), ""]
    else:
        lines += _measured_lines(report, out)
    lines += [
        "Real digits answered 'not a digit' elsewhere (the files measured are named by sha256 in "
        "the robustness sections above):",
        "",
    ]
    lines += canvas_rejections(measurements)
    lines += grid_rejections(measurements.get(report_robust.ROBUSTNESS_FILE))
    return lines


def measured_files(measurements: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, str]]:
    """report/robustness.py's measured_files, with answers.json's bytes where it names them."""
    others = {k: v for k, v in measurements.items() if k != ANSWERS_FILE}
    found = report_robust.measured_files(others)
    report = measurements.get(ANSWERS_FILE)
    digests = None if report is None else answers_bytes(report)
    if digests is not None:
        found[ANSWERS_FILE] = digests
    return found
