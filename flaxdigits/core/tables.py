"""Markdown tables, written one way for every report, card and benchmark page."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_RULE = {"l": "---", "r": "---:", "c": ":---:"}


def markdown_table(
    header: Sequence[object], rows: Iterable[Sequence[object]], align: str | None = None
) -> str:
    """A GitHub-flavoured markdown table; align has one letter per column (l, r or c), by
    default the first column left and the others right (labels, then figures). A "|" inside a
    cell is escaped; a row of another width than the header is a ValueError."""
    width = len(header)
    align = align or "l" + "r" * (width - 1)
    if len(align) != width or set(align) - set(_RULE):
        raise ValueError(f"align {align!r}: one of l, r, c for each of the {width} columns")
    lines = [_row(header), "|" + "|".join(_RULE[a] for a in align) + "|"]
    for number, row in enumerate(rows, 1):
        if len(row) != width:
            raise ValueError(f"row {number} has {len(row)} cells, the header {width}")
        lines.append(_row(row))
    return "\n".join(lines)


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"
