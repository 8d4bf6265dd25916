"""The model card's answers section: each file's answer rule ('not a digit', 'not sure', the
temperature), the real digits it rejects, its calibration error, and how well it tells held-out
non-digits from digits where reports/answers.json measured its bytes; and, in a release with the
gate, the drawing rule: its thresholds from the gate's manifest, its figures where answers.json
measured the gate, mlp and cnn files released together. Standard library and flaxdigits.core
only.
"""

from __future__ import annotations

import json
from typing import Any

from flaxdigits.core import contract
from flaxdigits.core.tables import markdown_table
from flaxdigits.export.card_figures import (
    measured,
    models_by_bytes,
    not_measured,
    num,
    pct,
    release_digests,
)


def answer_rule(variant: dict) -> dict | None:
    """The answer rule a file carries in its ONNX metadata; None for a file without one (or one
    that does not hold a valid rule)."""
    raw = variant["metadata"].get(contract.META_ANSWER_RULE)
    try:
        return contract.check_answer_rule(json.loads(raw)) if raw else None
    except (TypeError, ValueError):
        return None


def _rule_row(var: dict, rule: dict) -> list[str]:
    """A file's rule, its rejections on validation and test digits, its ECE before -> after."""
    measured = var["entry"].get("answers") or {}
    before = measured.get("ece_before_calibration")
    return [
        f"models/{var['file']}",
        f"{rule['temperature']:.3f}",
        pct(rule["not_a_digit_below"]),
        pct(rule["not_sure_below"]),
        pct(rule["validation_rejected"]),
        pct(measured.get("not_a_digit")),
        pct(measured.get("not_sure")),
        f"{pct(before)} → {pct(measured.get('ece'))}",
    ]


def answers_section(described: dict[str, dict], reports: dict[str, Any]) -> list[str]:
    """Each file's answer rule (from its metadata), the real digits it rejects (validation:
    the rule; test: the manifest), its calibration error, and how well it tells held-out
    non-digits from digits where reports/answers.json measured its bytes."""
    rows, without = [], []
    for d in described.values():
        for var in d["variants"].values():
            rule = answer_rule(var)
            if rule is None:
                without.append(
                    f"- models/{var['file']}: no answer rule (exported before answer rules): "
                    "every answer is a digit, its confidence the plain softmax."
                )
            else:
                rows.append(_rule_row(var, rule))
    out = ["", "## Answers: 'not a digit' and 'not sure'", ""]
    if rows:
        header = ["file", "temperature", "'not a digit' below", "'not sure' below"]
        header += ["validation digits rejected", "test digits: not a digit", "not sure"]
        out += [
            "Each file carries its answer rule (ONNX metadata `flaxdigits.answer_rule`), fitted",
            "on the validation digits (see Data), never the test set: the graph divides the",
            "logits by the temperature; the answer is 'not a digit' when the largest probability",
            "is below the first threshold, 'not sure' below the second, else the digit.",
            "Rejected: real digits answered 'not a digit'. ECE: expected calibration error on the",
            "test digits, before and after the temperature (from the manifest; int8: after only).",
            "",
            markdown_table([*header, "ECE before → after"], rows, align="lrrrrrrr"),
        ]
    if without:
        out += ["", *without] if rows else without
    return out + _nondigit_rows(described, reports)


def _nondigit_rows(described: dict[str, dict], reports: dict[str, Any]) -> list[str]:
    """AUROC and the share caught against the held-out non-digits, of the files
    reports/answers.json measured on these very bytes."""
    label = "Non-digit detection"
    if missing := not_measured(reports, "answers", label, "answers.json"):
        return missing
    where, doc = reports["answers"]
    found, lines = measured(
        release_digests(described), models_by_bytes(doc), where, label, "flaxdigits answers"
    )
    if not found:
        return lines
    heldout = doc.get("heldout") or {}
    kinds = sorted(heldout.get("kinds") or {})
    count = heldout.get("count")
    counts = ", ".join(f"{k} {heldout['kinds'][k]:,}" for k in kinds)
    rows = []
    for file, m in found.items():
        auroc, caught = m.get("auroc") or {}, m.get("caught") or {}
        rows.append(
            [file, num(auroc.get("all")), pct(caught.get("all"), 1)]
            + [num(auroc.get(k)) for k in kinds]
            + [pct(caught.get(k), 1) for k in kinds]
        )
    header = ["file", "AUROC", "caught", *(f"AUROC, {k}" for k in kinds)]
    header += [f"caught, {k}" for k in kinds]
    shown = (
        f"{count:,} held-out non-digits ({counts})"
        if isinstance(count, int)
        else "the held-out non-digits"
    )
    return [
        "",
        f"Against {shown}, kinds training never generated: AUROC of the confidence, digits",
        f"against non-digits, and the share caught as 'not a digit' ({where}).",
        "",
        markdown_table(header, rows, align="l" + "r" * (len(header) - 1)),
        *lines,
    ]


def drawing_section(
    described: dict[str, dict], gate: dict | None, reports: dict[str, Any]
) -> list[str]:
    """The gate's drawing rule in one paragraph, and per shipped variant its threshold and the
    validation digits it rejects (the gate's manifest), with the test digits and canvases it
    rejects and how well it tells held-out non-digits from digits where reports/answers.json
    measured these very files together; [] without a gate."""
    if gate is None:
        return []
    figures, lines = _drawing_figures(described, gate, reports)
    rows = []
    for variant, shipped in gate["variants"].items():
        rule, m = shipped["rule"], figures.get(variant) or {}
        rows.append(
            [
                variant,
                pct(rule["not_a_digit_below"]),
                pct(rule["validation_rejected"]),
                pct((m.get("test") or {}).get("not_a_digit")),
                pct((m.get("canvas") or {}).get("not_a_digit")),
                pct((m.get("caught") or {}).get("all"), 1),
                num((m.get("auroc") or {}).get("all")),
            ]
        )
    header = ["variant", "'not a digit' below", "validation digits rejected"]
    header += ["test digits rejected", "canvases rejected", "non-digits caught", "AUROC"]
    return [
        "",
        "## Drawing rule: 'not a digit' from the models together",
        "",
        "The page runs the gate with mlp and cnn on every drawing, the files of one variant",
        "together: the drawing's score is the smaller of the gate's confidence (its largest",
        "calibrated probability) and the largest of the three files' mean calibrated",
        "probabilities. Under the threshold of that variant's drawing rule",
        f"(models/{contract.GATE_NAME}.json), fitted on the validation digits with these very mlp",
        "and cnn files (named there by sha256), the drawing and every model's answer are 'not a",
        "digit'; otherwise the digits shown are mlp's and cnn's own, a model's own 'not a digit'",
        "made 'not sure'. The gate's own digit is never shown. Rejected: real digits the rule",
        "calls 'not a digit', of the test digits and of test digits drawn as canvases (`mnist`",
        "preprocessing); AUROC of the score and the share caught against the held-out",
        "non-digits (see Answers above).",
        "",
        markdown_table(header, rows, align="lrrrrrr"),
        *lines,
    ]


def _drawing_figures(
    described: dict[str, dict], gate: dict, reports: dict[str, Any]
) -> tuple[dict[str, dict], list[str]]:
    """({variant: reports/answers.json's drawing rule entry}, the card's line for the variants it
    did not measure): an entry is quoted only where it measured the release's gate, mlp and cnn
    files of that variant, by sha256."""
    label = "The drawing rule's figures"
    if missing := not_measured(reports, "answers", label, "answers.json"):
        return {}, missing
    where, doc = reports["answers"]
    entries = doc.get("drawing_rule")
    by_bytes = {
        json.dumps(e["sha256"], sort_keys=True): e
        for e in (entries.values() if isinstance(entries, dict) else ())
        if isinstance(e, dict) and isinstance(e.get("sha256"), dict)
    }
    found = {}
    for variant, shipped in gate["variants"].items():
        files = {n: d["variants"][variant]["entry"]["sha256"] for n, d in described.items()}
        files[contract.GATE_NAME] = shipped["entry"]["sha256"]
        entry = by_bytes.get(json.dumps(files, sort_keys=True))
        if entry is not None:
            found[variant] = entry
    missing = [v for v in gate["variants"] if v not in found]
    if not missing:
        return found, []
    why = f"{where} measured no drawing rule of these files: re-run `flaxdigits answers`"
    what = f"{label}, {', '.join(missing)}" if found else label
    return found, ["", f"{what}: not measured for these files ({why})."]
