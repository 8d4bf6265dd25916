"""Functions a screen long: no function of the package (flaxdigits/, export/, serve/) or of the
benchmarks is over MAX_LINES, counted by `ast` from its `def` to its last line, docstring
included. ruff's complexity rules (pyproject.toml) hold the branches and statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60
FOLDERS = ("flaxdigits", "export", "serve", "benchmarks")


def long_functions(path: Path, root: Path = ROOT, limit: int = MAX_LINES) -> list[str]:
    """'file:line name (N lines)' for each function of path over limit lines."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (n := node.end_lineno - node.lineno + 1) > limit
    ]


SOURCES = sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_is_longer_than_a_screen(path):
    assert long_functions(path) == []


def test_the_count_sees_a_long_function(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("def f():\n" + "    x = 1\n" * MAX_LINES + "\n\nasync def g():\n    pass\n")
    assert long_functions(long, tmp_path) == [f"long.py:1 f ({MAX_LINES + 1} lines)"]
