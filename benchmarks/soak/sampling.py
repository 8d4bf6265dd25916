"""What the soak reads of the server process while it runs: RSS, peak RSS, CPU time, open fds,
its temp dir and log, its stores' sizes (server.py's probe) and tracemalloc marks."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from benchmarks import loadtest


class Counter:
    """Requests sent so far, by every client thread."""

    def __init__(self):
        self.n = 0
        self.lock = threading.Lock()

    def add(self, k: int = 1):
        with self.lock:
            self.n += k

    def __call__(self):
        return self.n


def dir_stats(root: Path) -> tuple[int, int]:
    """(bytes, files) under root."""
    total = count = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
                count += 1
            except OSError:
                pass
    return total, count


def status(pid: int, key: str) -> int:
    """A number of /proc/PID/status (memory in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(key)


def vm(pid: int, key: str) -> float:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) in MiB."""
    return status(pid, key) / 1024


def settle(pid: int, seconds: float = 3.0) -> float:
    """VmRSS after seconds of rest."""
    time.sleep(seconds)
    return vm(pid, "VmRSS")


def peak_reset(pid: int) -> None:
    """Reset the kernel's peak-RSS mark of pid (VmHWM), so the next reading is this row's."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """RSS (MiB), open fds, temp-dir bytes and files, log bytes and (with the server's probe)
    store sizes of the server, every `every` seconds; with mark_every, a tracemalloc snapshot
    in the server each time the requests pass another multiple of it (marks: when)."""

    def __init__(self, served, counter, every: float = 1.0, mark_every: int = 0):
        super().__init__(daemon=True)
        self.served, self.counter, self.every = served, counter, every
        self.mark_every, self.marks = mark_every, []
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def sample(self) -> dict:
        pid = self.served.pid
        temp_bytes, temp_files = dir_stats(self.served.tmp)
        out = {
            "t": round(self.now(), 2),
            "requests": self.counter(),
            "rss_mib": round(loadtest.rss_mib(pid), 1),
            "threads": status(pid, "Threads"),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "temp_bytes": temp_bytes,
            "temp_files": temp_files,
            "log_bytes": self.served.log.stat().st_size,
        }
        stores = self.served.stores()
        if stores is not None:
            out["stores"] = stores
        return out

    def mark(self) -> None:
        done = self.counter()
        if self.mark_every and done >= (len(self.marks) + 1) * self.mark_every:
            self.served.mark()
            self.marks.append({"t": round(self.now(), 2), "requests": done})

    def run(self):
        while not self.stop.is_set():
            try:
                self.samples.append(self.sample())
                self.mark()
            except (OSError, RuntimeError):
                pass
            self.stop.wait(self.every)
