"""The memory allocator the page's process runs on: jemalloc where the system has it.

Under a long mix of honest and hostile requests, glibc's malloc keeps the memory the page frees
and hands little of it back: the page's live memory stays flat, its RSS climbs ~1 MiB per 1,000
requests (RELIABILITY.md, the soak). jemalloc returns it (0.28 MiB per 1,000 in the same soak).
`flaxdigits serve` (and so the Space's app.py and the soak's server) calls `use_jemalloc` before
it imports anything big: on Linux, with the choice `auto` or `jemalloc`, jemalloc not yet in the
process and a libjemalloc.so.2 in the system's library folders, the process replaces itself once
(`exec`, same pid, same arguments) with the library in LD_PRELOAD. Debian and Ubuntu ship it as
`libjemalloc2`. Only the system's own folders are searched, never the working directory.

The choice: `--allocator`, else $FLAXDIGITS_ALLOCATOR, else `auto` (jemalloc when found, glibc's
malloc when not); `jemalloc` refuses to start without it; `system` keeps the platform's malloc.
Standard library only: the edge install imports this without gradio or JAX.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

CHOICES = ("auto", "jemalloc", "system")
ENV = "FLAXDIGITS_ALLOCATOR"
# Set in the environment of the re-executed process: one exec at most, even when the preload
# did not take (the dynamic loader then prints one line and starts on glibc's malloc).
TRIED_ENV = "FLAXDIGITS_ALLOCATOR_TRIED"
LIBRARY = "libjemalloc.so.2"
SEARCH_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/arm-linux-gnueabihf",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)


class AllocatorError(ValueError):
    """The allocator asked for cannot be used; the message says why."""


def find(dirs: Iterable[str] = SEARCH_DIRS) -> str | None:
    """The first libjemalloc.so.2 in the system's library folders (absolute path), or None."""
    for folder in dirs:
        path = Path(folder) / LIBRARY
        if path.is_file():
            return str(path)
    return None


def loaded(maps: str | None = None) -> bool:
    """Whether jemalloc is mapped into this process (False where /proc is not readable)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text(errors="replace")
        except OSError:
            return False
    return "libjemalloc" in maps


def choice_of(flag: str | None, environ: Mapping[str, str]) -> str:
    """--allocator, else $FLAXDIGITS_ALLOCATOR, else auto; anything else is refused."""
    choice = (flag or environ.get(ENV) or "auto").strip().lower()
    if choice not in CHOICES:
        raise AllocatorError(f"allocator {choice!r}: choose one of {', '.join(CHOICES)}")
    return choice


def plan(
    choice: str, environ: Mapping[str, str], *, linux: bool, is_loaded: bool, found: str | None
) -> tuple[str | None, str]:
    """(library to preload and re-exec with, or None; one line saying what the process runs on).

    Raises:
        AllocatorError: `jemalloc` was asked for and cannot be had.
    """
    if is_loaded:
        return None, "memory allocator: jemalloc"
    if choice == "system":
        return None, "memory allocator: the system's malloc (asked for)"
    if not linux:
        if choice == "jemalloc":
            raise AllocatorError("allocator jemalloc: preloading it is supported on Linux only")
        return None, "memory allocator: the system's malloc"
    if environ.get(TRIED_ENV):
        if choice == "jemalloc":
            raise AllocatorError(f"allocator jemalloc: LD_PRELOAD of {found} did not load it")
        return None, f"memory allocator: glibc's malloc ({found} was preloaded and did not load)"
    if found is None:
        if choice == "jemalloc":
            raise AllocatorError(
                f"allocator jemalloc: no {LIBRARY} in {', '.join(SEARCH_DIRS)} "
                "(Debian/Ubuntu: apt install libjemalloc2)"
            )
        return None, (
            "memory allocator: glibc's malloc (install libjemalloc2 for a page that keeps its "
            "memory flat under load; see docs/hosting.md)"
        )
    return found, "memory allocator: jemalloc"


def preload_env(environ: Mapping[str, str], library: str) -> dict[str, str]:
    """The environment to re-exec with: the library first in LD_PRELOAD, the attempt marked."""
    preload = " ".join(p for p in (library, environ.get("LD_PRELOAD", "")) if p)
    return {**environ, "LD_PRELOAD": preload, TRIED_ENV: "1"}


def use_jemalloc(flag: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """Re-exec this process on jemalloc where the choice and the system allow (does not return
    then); otherwise the line saying which allocator the process runs on.

    Raises:
        AllocatorError: a bad choice, or `jemalloc` asked for and not to be had.
    """
    choice = choice_of(flag, environ)
    library, line = plan(
        choice,
        environ,
        linux=sys.platform.startswith("linux"),
        is_loaded=loaded(),
        found=find(),
    )
    if library is None:
        return line
    sys.stdout.flush()
    sys.stderr.flush()
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    os.execve(sys.executable, argv, preload_env(environ, library))  # noqa: S606 - ourselves again
    raise AssertionError("unreachable")  # pragma: no cover - execve does not return
