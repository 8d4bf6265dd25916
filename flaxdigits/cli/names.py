"""Old names the commands still accept: renamed to the new one, with one line saying so."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping


def renamed(old_to_new: Mapping[str, str], flag: str) -> Callable[[str], str]:
    """An argparse `type` that turns an old value of flag into its new name (argparse then checks
    the new name against the choices), saying so once on stderr."""

    def convert(value: str) -> str:
        new = old_to_new.get(value)
        if new is None:
            return value
        print(f"flaxdigits: {flag} {value} is now {flag} {new} (the old name still works, for now)",
              file=sys.stderr)  # fmt: skip
        return new

    return convert
