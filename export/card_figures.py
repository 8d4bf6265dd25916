"""The figures a model card quotes from measurement reports, each matched to the bytes it was
measured on: a report's figure for other bytes, or from a report that names no bytes, is not
quoted, and the card says which files were not measured and the command that measures them.
Standard library only.
"""

from __future__ import annotations

from typing import Any


def pct(value: float | None, digits: int = 2) -> str:
    """A share as a percentage, n/a when missing."""
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def not_measured(reports: dict[str, Any], key: str, label: str, file: str) -> list[str]:
    """The card's line for a report that does not describe these files; [] when it does."""
    if key in reports:
        return []
    why = reports.get(f"{key}_skipped", f"no reports/{file}")
    return ["", f"{label}: not measured for these files ({why})."]


def release_digests(described: dict[str, dict]) -> dict[str, str]:
    """{file: sha256} of the release's model files, in card order (their manifest entries,
    which the release checked against the bytes)."""
    return {
        var["file"]: var["entry"]["sha256"]
        for d in described.values()
        for var in d["variants"].values()
    }


def canvas_by_bytes(doc: dict) -> dict[str, dict]:
    """{sha256: accuracy per method} of each model file a canvas report measured; {} for a
    report that names no bytes (written before reports recorded them)."""
    digests, accuracy = doc.get("sha256"), doc.get("accuracy")
    if not isinstance(digests, dict) or not isinstance(accuracy, dict):
        return {}
    return {
        digest: accuracy[stem]
        for stem, digest in digests.items()
        if isinstance(digest, str) and isinstance(accuracy.get(stem), dict)
    }


def models_by_bytes(doc: dict) -> dict[str, dict]:
    """{sha256: model entry} of each model file a report with a `models` map measured
    (robustness, answers); {} for a report that names no bytes."""
    models = doc.get("models")
    if not isinstance(models, dict):
        return {}
    return {
        m["sha256"]: m
        for m in models.values()
        if isinstance(m, dict) and isinstance(m.get("sha256"), str)
    }


def measured(
    files: dict[str, str], by_bytes: dict[str, dict], where: str, label: str, command: str
) -> tuple[dict[str, dict], list[str]]:
    """The figures of each file measured on its exact bytes ({file: figures}), and the card's
    line for the files that were not (none when every file was)."""
    found = {file: by_bytes[digest] for file, digest in files.items() if digest in by_bytes}
    missing = [file for file in files if file not in found]
    if not missing:
        return found, []
    if by_bytes:
        why = f"{where} measured other bytes: re-run `{command}` on them"
    else:
        why = (
            f"{where} names no model bytes, as reports written before they recorded each "
            f"file's sha256: re-run `{command}`"
        )
    what = f"{label} of {', '.join(missing)}" if found else label
    return found, ["", f"{what}: not measured for these files ({why})."]


def num(value: float | None) -> str:
    """A figure to 4 decimals, n/a when missing."""
    return "n/a" if value is None else f"{value:.4f}"
