"""Atomic file writes: a temp file in the target's directory, fsync, then rename over the target.

A reader (or a crash) sees the old file or the new one, never half of one. Standard library only.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

# Test-only fault hook (tests/test_faults.py): with FLAXDIGITS_TEST_PAUSE_WRITE="GLOB[@N]", the
# N-th atomic write (default: the first) in this process whose target's name matches GLOB writes
# half of its bytes to the temp file, records {"target", "temp", "written", "size"} as JSON in
# the file named by FLAXDIGITS_TEST_PAUSED, and waits there to be killed: a SIGKILL then lands
# inside the write, not wherever a sleep happened to end. A directory written whole and then
# renamed (an Orbax checkpoint step) pauses the same way with everything written, just before
# its rename (pause_before_rename).
PAUSE_ENV = "FLAXDIGITS_TEST_PAUSE_WRITE"
PAUSED_ENV = "FLAXDIGITS_TEST_PAUSED"
PAUSE_LIMIT_S = 600  # a paused write nobody kills gives up (raises) instead of hanging forever
_matching_writes = 0


def write_bytes_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o644) -> Path:
    """Write bytes to path atomically (temp + fsync + rename); creates parent dirs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if PAUSE_ENV in os.environ and _pause_requested(path.name):
                _pause_mid_write(f, path, tmp, data)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text to path atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write obj as indented JSON to path atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _pause_requested(name: str) -> bool:
    """Whether this write is the one FLAXDIGITS_TEST_PAUSE_WRITE names (counts matching writes)."""
    global _matching_writes
    pattern, _, nth = os.environ[PAUSE_ENV].partition("@")
    if not fnmatch.fnmatchcase(name, pattern):
        return False
    _matching_writes += 1
    return _matching_writes == int(nth or 1)


def _pause_mid_write(f, path: Path, tmp: str, data: bytes) -> None:
    """Write half of data, say so in the FLAXDIGITS_TEST_PAUSED file, wait to be killed."""
    half = len(data) // 2
    f.write(data[:half])
    f.flush()
    os.fsync(f.fileno())
    _pause({"target": str(path), "temp": tmp, "written": half, "size": len(data)})


def pause_before_rename(target: Path, temp: Path) -> None:
    """The test hook for a directory written at temp, about to be renamed to target."""
    if PAUSE_ENV in os.environ and _pause_requested(target.name):
        size = sum(p.stat().st_size for p in temp.rglob("*") if p.is_file())
        _pause({"target": str(target), "temp": str(temp), "written": size, "size": size})


def _pause(note: dict[str, Any]) -> None:
    """Say where the write stands in the FLAXDIGITS_TEST_PAUSED file, wait to be killed."""
    marker = Path(os.environ[PAUSED_ENV])
    marker.with_name(marker.name + ".part").write_text(json.dumps(note))
    os.replace(marker.with_name(marker.name + ".part"), marker)
    time.sleep(PAUSE_LIMIT_S)
    raise RuntimeError(f"{PAUSE_ENV}: paused in the write of {note['target']} and nobody killed it")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
