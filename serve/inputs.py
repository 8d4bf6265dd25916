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

import fnmatch
import glob
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

from flaxdigits.serve.runtime.decode import EXTENSIONS

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
        matches = _glob(arg)
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


def _glob(pattern: str) -> list[str]:
    """Sorted matches of pattern; `**` is any number of folders, walked without following
    folder links (glob.glob's `**` follows them, so a link loop multiplies the matches)."""
    if "**" not in pattern:
        return sorted(glob.glob(pattern))
    parts = pattern.split(os.sep)
    first = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    root = os.sep.join(parts[:first]) or (os.sep if pattern.startswith(os.sep) else os.curdir)
    wanted = parts[first:]
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs.sort()
        for name in dirs + names:
            path = os.path.join(folder, name)
            if _match(wanted, os.path.relpath(path, root).split(os.sep)):
                found.append(path if parts[:first] else os.path.relpath(path))
    return sorted(found)


def _match(pattern: list[str], parts: list[str]) -> bool:
    """fnmatch of path parts against pattern parts, `**` matching zero or more parts."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatch(parts[0], pattern[0]) and _match(pattern[1:], parts[1:])


def _is_image_name(path: str) -> bool:
    return path.lower().endswith(EXTENSIONS)
