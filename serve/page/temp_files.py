"""The serving temp dir's disk budget and the uploads in use (TempFiles), for serve/page/guard.py.

Gradio writes every upload and output into one temp dir; on the open internet that dir must not
grow without bound. TempFiles counts the bytes there, evicts the oldest uploads no request holds,
and deletes an upload once the prediction that needed it has read it. Standard library only.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

MIB = 1 << 20
TEMP_DIR_BYTES = 256 * MIB  # uploads and outputs on disk, all clients together
EVICT_AFTER_S = 120.0  # an unreleased upload older than this may be evicted to make room
RELEASE_GRACE_S = 5.0  # a released upload is deleted this long after its last use


class TempFiles:
    """The temp dir's budget and the uploads in use.

    An upload's paths are counted when the upload route hands them out and released once a
    prediction has read them; a path back at zero is deleted RELEASE_GRACE_S later (two clients
    uploading the same bytes share one path). Room for a new upload comes from evicting the
    oldest files no request holds, once older than EVICT_AFTER_S.
    """

    def __init__(
        self,
        root,
        budget: int = TEMP_DIR_BYTES,
        *,
        evict_after_s: float = EVICT_AFTER_S,
        grace_s: float = RELEASE_GRACE_S,
        clock=time.time,
    ):
        self.root = Path(root)
        self.budget = budget
        self.evict_after_s = evict_after_s
        self.grace_s = grace_s
        self.clock = clock
        self._held: dict[str, int] = {}
        self._released: dict[str, float] = {}  # path -> when its count reached zero
        self._reserved = 0
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None

    def usage(self) -> int:
        """Bytes of every file under the temp dir."""
        return sum(size for _, size, _ in self._files())

    def _files(self) -> list[tuple[str, int, float]]:
        out = []
        stack = [self.root]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        out.append((entry.path, st.st_size, st.st_mtime))
                except OSError:
                    continue
        return out

    def reserve(self, nbytes: int) -> bool:
        """Room for nbytes more, evicting old unused files if needed; False: no room (507)."""
        self.sweep()
        with self._lock:
            files = self._files()
            used = sum(size for _, size, _ in files) + self._reserved
            if used + nbytes > self.budget:
                cutoff = self.clock() - self.evict_after_s
                for path, size, mtime in sorted(files, key=lambda f: f[2]):
                    if used + nbytes <= self.budget or mtime > cutoff:
                        break
                    if self._held.get(path):
                        continue
                    try:
                        os.unlink(path)
                    except OSError:
                        continue
                    self._released.pop(path, None)
                    used -= size
            if used + nbytes > self.budget:
                return False
            self._reserved += nbytes
            return True

    def unreserve(self, nbytes: int) -> None:
        with self._lock:
            self._reserved = max(0, self._reserved - nbytes)

    def handed_out(self, paths) -> None:
        """The upload route returned these paths: each is now in use until released."""
        with self._lock:
            for path in paths:
                path = os.path.abspath(path)
                self._held[path] = self._held.get(path, 0) + 1
                self._released.pop(path, None)

    def release(self, path) -> None:
        """A prediction has read path: delete it once no request holds it (after the grace)."""
        path = os.path.abspath(path)
        if not path.startswith(str(self.root.resolve()) + os.sep):
            return
        with self._lock:
            count = self._held.pop(path, 0) - 1
            if count > 0:
                self._held[path] = count
            else:
                self._released[path] = self.clock()
            if self._sweeper is None or not self._sweeper.is_alive():
                self._sweeper = threading.Thread(target=self._sweep_until_done, daemon=True)
                self._sweeper.start()

    def _sweep_until_done(self) -> None:
        """Background: sweep every half grace while released files wait for deletion."""
        while True:
            time.sleep(self.grace_s / 2)
            self.sweep()
            with self._lock:
                if not self._released:
                    self._sweeper = None
                    return

    def sweep(self) -> None:
        """Delete released files whose grace has passed and that no request took up again."""
        now = self.clock()
        with self._lock:
            due = [p for p, t in self._released.items() if now - t >= self.grace_s]
            for path in due:
                del self._released[path]
                if not self._held.get(path):
                    try:
                        os.unlink(path)
                        os.rmdir(os.path.dirname(path))  # Gradio's per-hash directory
                    except OSError:
                        pass
