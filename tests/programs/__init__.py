"""Programs the tests start in a process of their own, as files ruff reads (no `python -c`).

Each runs by its path, `python tests/programs/NAME.py ARGS` (`command(NAME, *ARGS)`), and needs
only flaxdigits and its dependencies, so a serve-only or edge venv can run one too.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def command(name: str, *args, python: str | Path = sys.executable) -> list[str]:
    """The argv that runs tests/programs/NAME.py with args under the given Python."""
    return [str(python), str(HERE / f"{name}.py"), *(str(a) for a in args)]
