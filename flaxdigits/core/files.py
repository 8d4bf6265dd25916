"""Reading a whole file defensively: a regular file only, never more than a byte cap.

Standard library only. Callers (the MNIST loader, the model loader, the image loader) wrap
ReadError in their own error type and prefix the path, so each message says which file and what
to do.
"""

from __future__ import annotations

import os


class ReadError(ValueError):
    """A file could not be read within its cap; the message says why (without the path)."""


def read_capped(path: str | os.PathLike | bytes, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most max_bytes, read without reading any more.

    A directory, a FIFO or device (which could block or never end), a missing file, an
    unreadable one and one over the cap are refused with ReadError; `what` names the kind of file
    in the messages ("no such model file").
    """
    try:
        if os.path.isdir(path):
            raise ReadError("is a directory")
        if not os.path.isfile(path):
            raise ReadError("not a regular file" if os.path.exists(path) else f"no such {what}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ReadError(f"cannot read {what}: {e.strerror or e}") from None
    if len(data) > max_bytes:
        raise ReadError(f"{what} is over the {max_bytes:,}-byte limit")
    return data
