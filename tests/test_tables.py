"""core.tables: the one markdown-table writer."""

from __future__ import annotations

import pytest

from flaxdigits.core.tables import markdown_table


def test_labels_left_figures_right_by_default():
    text = markdown_table(["model", "test", "canvas"], [["mlp", "98.66%", "98.38%"], ["cnn", 1, 2]])
    assert text.splitlines() == [
        "| model | test | canvas |",
        "|---|---:|---:|",
        "| mlp | 98.66% | 98.38% |",
        "| cnn | 1 | 2 |",
    ]


def test_alignment_per_column_and_pipes_escaped():
    text = markdown_table(["a", "b", "c"], [["x|y", "", "z"]], align="lcr")
    assert text.splitlines()[1:] == ["|---|:---:|---:|", "| x\\|y |  | z |"]


@pytest.mark.parametrize(
    "rows, align, message",
    [([["only one"]], None, "row 1 has 1 cells, the header 2"), ([], "lx", "one of l, r, c")],
)
def test_a_ragged_row_or_a_bad_alignment_is_refused(rows, align, message):
    with pytest.raises(ValueError, match=message):
        markdown_table(["a", "b"], rows, align=align)
