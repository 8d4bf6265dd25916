"""What `flaxdigits predict` is pointed at -> the image files to read, in a stable order.

An argument is, in this order: `-` (paths on standard input, one per line, each taken as a
literal path or folder, never as a pattern), an existing folder (every image file under it,
recursively, by extension; folder links are not followed, so a link loop cannot run forever),
an existing file (as given, whatever its extension: the decoder says if it is not an image), a
glob pattern (`*`, `?`, `[...]`, `**` across folders; matches sorted, matched files taken as
they are, matched folders expanded as above), or else a missing path, passed on so its error
names it. A folder or pattern that yields no image file is an InputProblem, reported in place
like a file that failed.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

from flaxdigits.serve.decode import EXTENSIONS

STDIN = "-"


@dataclass(frozen=True)
class InputProblem:
    """An argument that names no image file: the argument and why."""

    path: str
    message: str


def expand(args: Iterable[str], stdin: TextIO | None = None) -> Iterator[str | InputProblem]:
    """Image paths (str) and InputProblems, in argument order; folders and matches sorted."""
    for arg in args:
        if arg == STDIN:
            for line in stdin if stdin is not None else sys.stdin:
                path = line.rstrip("\r\n")
                if path:
                    yield from _path(path, pattern=False)
        else:
            yield from _path(arg, pattern=True)


def _path(arg: str, *, pattern: bool) -> Iterator[str | InputProblem]:
    if os.path.isdir(arg):
        yield from _folder(arg)
    elif os.path.lexists(arg) or not pattern or not glob.has_magic(arg):
        yield arg
    else:
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            yield InputProblem(arg, "no file matches this pattern")
        for match in matches:  # a matched file is taken as asked for, whatever its name
            yield from _folder(match) if os.path.isdir(match) else (match,)


def _folder(folder: str) -> Iterator[str | InputProblem]:
    """Image files under folder, recursively, sorted by path; none is an InputProblem."""
    found = False
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            if _is_image_name(name):
                found = True
                yield os.path.join(root, name)
    if not found:
        yield InputProblem(folder, f"no image files ({', '.join(EXTENSIONS)}) in this folder")


def _is_image_name(path: str) -> bool:
    return path.lower().endswith(EXTENSIONS)
