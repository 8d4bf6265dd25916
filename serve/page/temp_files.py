"""The serving temp dir's budget: uploads as leases, charged to the address that sent them.

Gradio writes every upload and output into one temp dir; on the open internet that dir must not
grow without bound, in bytes or in files. TempFiles keeps a running total of both, so deciding
whether an upload fits never walks the tree:

- An upload request first reserves room (reserve): bytes and file slots, in all and for its
  client address; no room is a 507.
- Each path the upload route hands out is a lease (handed_out): deleted LEASE_S later unless a
  queue join names it (claim: CLAIM_S more) or a handler that read it releases it (release: deleted
  grace_s after its last release; two clients uploading the same bytes share one path).
- A sweep every SWEEP_S seconds (start: a task on the server's event loop) deletes what is due
  and walks the tree in a worker thread: files the leases do not know (Gradio's outputs) are
  counted, leases whose file is gone are dropped, and stray temp files of cut or refused uploads
  are deleted (closed files at the top of the dir, seen at two sweeps in a row; until then their
  request's reservation stays charged to its address). Deleting on the event loop, and only the
  very file a lease was given (its inode), never races Gradio's upload route, which makes a hash
  directory and renames a new upload of the same bytes into the same path in one step there.

Paths are compared as os.path.realpath gives them: a temp dir reached through a symlink (macOS
/var -> /private/var, a symlinked $TMPDIR) names each file one way. Standard library only.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

KIB, MIB = 1 << 10, 1 << 20
TEMP_DIR_BYTES = 256 * MIB  # uploads and outputs on disk, all clients together
TEMP_DIR_FILES = 8192  # files in the temp dir, all clients together
CLIENT_DISK_BYTES = 32 * MIB  # one client address's uploads on disk and in flight
CLIENT_FILES = 1024  # one client address's files on disk and in flight (each upload: 4 slots)
FILE_CHARGE = 4 * KIB  # the least a file is charged: an empty file still takes a block and a name
LEASE_S = 60.0  # an upload no queue join has named is deleted this long after it was handed out
CLAIM_S = 300.0  # an upload a queue join named waits this long for the handler that reads it
RELEASE_GRACE_S = 5.0  # a released upload is deleted this long after its last release
UPLOAD_KEEP_S = 300.0  # ... one the page's Upload tab read: kept for the method switch to re-read
SWEEP_S = 2.0  # how often the background sweep deletes what is due and recounts the tree
STRAY_IDLE_S = 60.0  # without /proc: a top-level file unwritten this long is a stray


@dataclass
class Lease:
    """One path the upload route handed out."""

    owner: str
    charge: int  # bytes charged to the owner: the file's size, at least FILE_CHARGE
    expires: float  # deleted then, unless claimed or released again
    since: float  # when handed out: a tree walk that started before cannot drop it
    inode: tuple[int, int]  # (device, inode) of the file handed out: only that one is deleted
    holds: int = 1  # hand-outs not yet released
    # The path as the upload route named it, which is what Gradio's list of uploads holds: not
    # the real path where the temp dir is reached through a symlink.
    named: str = ""


@dataclass
class Ticket:
    """One upload request's reservation: what it may write while in flight."""

    owner: str
    nbytes: int
    files: int
    sweeps_left: int | None = None  # after a failed end: sweeps until its strays are gone


class TempFiles:
    """The temp dir's byte and file budgets, in all and per client address (module doc)."""

    def __init__(
        self,
        root,
        budget: int = TEMP_DIR_BYTES,
        *,
        max_files: int = TEMP_DIR_FILES,
        client_bytes: int = CLIENT_DISK_BYTES,
        client_files: int = CLIENT_FILES,
        lease_s: float = LEASE_S,
        claim_s: float = CLAIM_S,
        grace_s: float = RELEASE_GRACE_S,
        clock=time.time,
    ):
        self.root = Path(os.path.realpath(root))
        self.budget, self.max_files = budget, max_files
        self.client_bytes, self.client_files = client_bytes, client_files
        self.lease_s, self.claim_s, self.grace_s = lease_s, claim_s, grace_s
        self.clock = clock
        self.forget = None  # called with each deleted path as Gradio named it, on the event loop
        self._leases: dict[str, Lease] = {}
        self._tickets: dict[int, Ticket] = {}
        self._ids = itertools.count()
        self._owners: dict[str, list[int]] = {}  # address -> [bytes, files] charged
        self._charged = [0, 0]  # leases and tickets: [bytes, files]
        self._other = [0, 0]  # files the leases do not know, as the last walk counted them
        self._closed_strays: set[str] = set()  # closed top-level files at the last walk
        self._deleted: collections.deque[str] = collections.deque(maxlen=4 * max_files)
        self._lock = threading.Lock()  # release() comes from the handlers' worker threads
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------- the event loop's side

    def usage(self) -> tuple[int, int]:
        """(bytes, files) counted now: leases, reservations and the other files of the last walk."""
        with self._lock:
            return self._charged[0] + self._other[0], self._charged[1] + self._other[1]

    def reserve(self, nbytes: int, files: int, owner: str) -> int | None:
        """Room for an upload request of nbytes and up to files files: its ticket, or None (507)."""
        nbytes = max(nbytes, files * FILE_CHARGE)
        with self._lock:
            used = self._owners.get(owner, (0, 0))
            if (
                self._charged[0] + self._other[0] + nbytes > self.budget
                or self._charged[1] + self._other[1] + files > self.max_files
                or used[0] + nbytes > self.client_bytes
                or used[1] + files > self.client_files
            ):
                return None
            ticket = next(self._ids)
            self._tickets[ticket] = Ticket(owner, nbytes, files)
            self._charge(owner, nbytes, files)
            return ticket

    def finish(self, ticket: int, clean: bool) -> None:
        """The request ended; a failed one (cut, refused) stays charged until its strays go."""
        with self._lock:
            entry = self._tickets.get(ticket)
            if entry is None:
                return
            if clean:
                del self._tickets[ticket]
                self._charge(entry.owner, -entry.nbytes, -entry.files)
            else:
                entry.sweeps_left = 2

    def handed_out(self, paths, owner: str) -> None:
        """The upload route returned these paths: each is a lease charged to owner."""
        now = self.clock()
        given = [str(p) for p in paths]  # as Gradio names them (the same path twice: two holds)
        paths = [os.path.realpath(p) for p in given]
        named = dict(zip(paths, given, strict=True))  # real path -> Gradio's name for it
        with self._lock:
            # A deleted path handed out again holds the same bytes uploaded anew (Gradio names
            # an upload by its hash), already back in Gradio's list: not to be forgotten.
            forgotten = [p for p in self._deleted if p not in given]
            self._deleted.clear()
            for path in paths:
                if not self._inside(path):
                    continue
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                inode = (st.st_dev, st.st_ino)
                lease = self._leases.get(path)
                if lease is not None:  # the same bytes again: one path, one more hold
                    lease.holds += 1
                    lease.expires = max(lease.expires, now + self.lease_s)
                    lease.inode = inode  # Gradio renamed the new copy over the old one
                    continue
                charge = max(st.st_size, FILE_CHARGE)
                lease = Lease(owner, charge, now + self.lease_s, now, inode, named=named[path])
                self._leases[path] = lease
                self._charge(owner, lease.charge, 1)
        if self.forget is not None:
            for path in forgotten:
                self.forget(path)

    def claim(self, paths) -> None:
        """A queue join named these paths: each waits CLAIM_S for the handler that reads it."""
        now = self.clock()
        with self._lock:
            for path in map(os.path.realpath, paths):
                lease = self._leases.get(path)
                if lease is not None and lease.holds > 0:
                    lease.expires = max(lease.expires, now + self.claim_s)

    def release(self, path, keep_s: float | None = None) -> None:
        """A handler has read path: delete it keep_s (default: the grace) after its last release."""
        path = os.path.realpath(path)
        keep = self.grace_s if keep_s is None else keep_s
        with self._lock:
            lease = self._leases.get(path)
            if lease is None:
                return
            lease.holds = max(0, lease.holds - 1)
            if lease.holds == 0:
                lease.expires = self.clock() + keep

    def _inside(self, path: str) -> bool:
        return path.startswith(f"{self.root}{os.sep}")

    def _charge(self, owner: str, nbytes: int, files: int) -> None:
        """Under the lock: add to the owner's and the total charges; an owner at zero is dropped."""
        self._charged[0] += nbytes
        self._charged[1] += files
        used = self._owners.setdefault(owner, [0, 0])
        used[0] += nbytes
        used[1] += files
        if used[0] <= 0 and used[1] <= 0:
            del self._owners[owner]

    # ---------------------------------------------------------------------- the sweep's side

    def start(self) -> None:
        """Sweep every SWEEP_S seconds, as a task of the running event loop, until close()."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._sweep_forever())

    def close(self) -> None:
        """Stop the sweep and remove the temp dir with everything in it."""
        if self._task is not None:
            self._task.cancel()
        shutil.rmtree(self.root, ignore_errors=True)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            started = self.clock()
            files = await asyncio.to_thread(_walk, str(self.root))  # the walk: off the loop
            open_now = await asyncio.to_thread(_open_files)
            self._sweep(files, open_now, started)  # the deletions: on the loop

    def sweep(self) -> None:
        """One sweep, here and now (tests; the server's runs on its event loop)."""
        started = self.clock()
        self._sweep(_walk(str(self.root)), _open_files(), started)

    def _sweep(self, files, open_now, started: float) -> None:
        """Delete expired leases' files, then count the walk's files and delete the strays."""
        with self._lock:
            due = [
                (p, lease.inode) for p, lease in self._leases.items() if lease.expires <= started
            ]
            for path, _ in due:
                self._drop(path)
        for path, inode in due:
            _unlink(path, inode)
        gone = {path for path, _ in due}
        files = {p: f for p, f in files.items() if p not in gone}  # walked before they went
        with self._lock:
            strays = self._recount(files, open_now, started)
        for path in strays:
            _unlink(path)

    def _recount(self, files, open_now, started: float) -> list[str]:
        """Under the lock, after a walk: the other files' totals, lost leases, tickets drained;
        returns the strays to delete (top-level files no upload is writing, at two walks in a
        row: closed, or where /proc cannot say, unwritten for STRAY_IDLE_S)."""
        for path, lease in list(self._leases.items()):
            if path not in files and lease.since < started:
                self._drop(path)
        other = [0, 0]
        closed = set()
        for path, (size, mtime, top) in files.items():
            if path in self._leases:
                continue
            if top:  # Gradio's temp file of a multipart part: in flight, or a stray
                if path in open_now if open_now is not None else started - mtime < STRAY_IDLE_S:
                    continue  # an upload in flight: its ticket is charged for it
                closed.add(path)
                if path in self._closed_strays:
                    continue  # a stray: deleted now
            other[0] += max(size, FILE_CHARGE)
            other[1] += 1
        self._other = other
        strays = sorted(closed & self._closed_strays)
        self._closed_strays = closed - set(strays)
        for ticket, entry in list(self._tickets.items()):
            if entry.sweeps_left is not None:
                entry.sweeps_left -= 1
                if entry.sweeps_left <= 0:
                    del self._tickets[ticket]
                    self._charge(entry.owner, -entry.nbytes, -entry.files)
        return strays

    def _drop(self, path: str) -> None:
        """Under the lock: forget a lease and its charge (its file is deleted by the caller)."""
        lease = self._leases.pop(path)
        self._charge(lease.owner, -lease.charge, -1)
        self._deleted.append(lease.named or path)


def _unlink(path: str, inode: tuple[int, int] | None = None) -> None:
    """Delete a file (only if it is still that inode) and, when empty, Gradio's per-hash
    directory that held it."""
    try:
        if inode is not None:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) != inode:
                return  # a new upload of the same bytes took the path: its own lease
        os.unlink(path)
        os.rmdir(os.path.dirname(path))
    except OSError:
        pass


def _walk(root: str) -> dict[str, tuple[int, float, bool]]:
    """Every regular file under root: path -> (size, mtime, directly in root)."""
    out = {}
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    out[entry.path] = (st.st_size, st.st_mtime, directory == root)
            except OSError:
                continue
    return out


def _open_files() -> set[str] | None:
    """Paths this process has open (Linux /proc/self/fd); None where that cannot be read."""
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return None
    out = set()
    for fd in fds:
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return out
