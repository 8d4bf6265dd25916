"""The page under test: benchmarks/soak/server.py started on a free port, this checkout's or an
older one's (--before DIR, laid out as installed), its temp dir and log the soak's own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flaxdigits.serve import page
from flaxdigits.serve.page import allocator
from tests.support.installed import installed_tree
from tests.support.ports import PortTaken, on_free_port, says_port_taken

SERVER = Path(__file__).with_name("server.py")
START_S = 120
READY = b"soak server: serving "  # what server.py prints once launch() has returned
STOP_S = 60


@dataclass
class Served:
    """A running page: its process, address, temp dir and log; its store probe and tracemalloc
    snapshots when asked for."""

    proc: subprocess.Popen
    port: int
    tmp: Path
    log: Path
    probe: Path | None = None
    trace: Path | None = None
    allocator: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def stores(self) -> dict | None:
        """The server's last probe of its stores (None without a probe, or before its first)."""
        if self.probe is None:
            return None
        try:
            sizes = json.loads(self.probe.read_text())
        except (OSError, ValueError):
            return None
        sizes.pop("t", None)
        return sizes

    def trim(self, timeout: float = 30.0) -> dict | None:
        """Ask the server for malloc_trim(0) (after the last sample: it lowers RSS): VmRSS and
        malloc's figures before and after it (None without a probe, or no answer in time)."""
        if self.probe is None:
            return None
        answer = self.probe.with_suffix(".trim.json")
        try:
            os.kill(self.pid, signal.SIGUSR2)
        except OSError:
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return json.loads(answer.read_text())
            except (OSError, ValueError):
                time.sleep(0.2)
        return None

    def mark(self) -> None:
        """Ask the server for a tracemalloc snapshot (its growth by line since the last)."""
        if self.trace is not None:
            os.kill(self.pid, signal.SIGUSR1)

    def snapshots(self) -> list[dict]:
        """The server's tracemalloc snapshots so far, one per mark() it has answered."""
        if self.trace is None or not self.trace.exists():
            return []
        return [json.loads(line) for line in self.trace.read_text().splitlines()]

    def stop(self, timeout: float = STOP_S) -> None:
        """SIGTERM, then SIGKILL if it has not exited within timeout."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)


@dataclass(frozen=True)
class Checkout:
    """Which flaxdigits the server runs: this checkout's (tree None) or an installed tree."""

    tree: Path | None = None
    label: str = "this checkout"

    @classmethod
    def before(cls, root: Path, work: Path) -> Checkout:
        """An older checkout (a `git worktree` or `git archive` of it) laid out as installed."""
        return cls(installed_tree(work / "before-installed", root=root), str(root))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)
        return env

    def expected(self) -> Path:
        """Where the served page's modules must come from."""
        return self.tree if self.tree is not None else Path(page.__file__).resolve().parents[1]


def start_server(
    models: Path,
    tmp: Path,
    log: Path,
    checkout: Checkout = Checkout(),  # noqa: B008 - frozen
    *,
    ctrl_c: bool = False,
    probe: bool = False,
    trace: int = 0,
    malloc_trim_every: float = 0.0,
    allocator: str = "auto",
) -> Served:
    """The page on a free loopback port (picked again if another process takes it first), its
    temp dir under tmp and its output into log (a file: a pipe nobody reads would block the server
    once full); returns once it answers. The server's working directory is tmp's parent, outside
    the checkouts.

    ctrl_c: SIGINT acts as Ctrl-C in a terminal. probe: the server writes its stores' sizes to
    log's sibling .stores.json every second. trace: tracemalloc in the server with this many
    frames, a snapshot at each Served.mark() (log's sibling .trace.jsonl). malloc_trim_every:
    seconds between malloc_trim(0) calls in the server (an experiment; 0: none, as the page).
    allocator: as `flaxdigits serve --allocator` (auto: jemalloc where the system has it), chosen
    here for the checkout served, an older one included; `Served.allocator` says which."""
    models = models.resolve()
    env = {**checkout.env(), "TMPDIR": str(tmp), "GRADIO_TEMP_DIR": str(tmp / "gradio")}
    env, allocator_line = with_allocator(env, allocator)
    extra = ["--expect-under", str(checkout.expected())] + (["--ctrl-c"] if ctrl_c else [])
    probe_file = log.with_suffix(".stores.json") if probe else None
    trace_file = log.with_suffix(".trace.jsonl") if trace else None
    if probe_file:
        extra += ["--probe", str(probe_file)]
    if trace_file:
        extra += ["--trace", str(trace), "--trace-out", str(trace_file)]
    if malloc_trim_every:
        extra += ["--malloc-trim-every", str(malloc_trim_every)]

    def start(port: int) -> subprocess.Popen:
        argv = [sys.executable, "-P", str(SERVER), str(models), str(port), *extra]
        with open(log, "wb") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and program
                argv, env=env, cwd=tmp.parent, stdout=out, stderr=subprocess.STDOUT
            )
        wait_until_up(proc, port, log)
        return proc

    port, proc = on_free_port(start)
    return Served(proc, port, tmp, log, probe_file, trace_file, allocator_line)


def with_allocator(env: dict[str, str], choice: str) -> tuple[dict[str, str], str]:
    """The server's environment with jemalloc preloaded where `choice` and the system allow (as
    `flaxdigits serve` re-executes itself), and the line naming the allocator it runs on."""
    library, line = allocator.plan(
        allocator.choice_of(choice, {}),
        {},
        linux=sys.platform.startswith("linux"),
        is_loaded=False,
        found=allocator.find(),
    )
    if library is None:
        return {**env, allocator.ENV: "system"}, line
    return {**allocator.preload_env(env, library), allocator.ENV: "jemalloc"}, line


def wait_until_up(proc: subprocess.Popen, port: int, log: Path) -> None:
    """Poll until the page answers and its launch() has returned (Gradio's launch still checks
    its own URL after the page answers: a signal then lands in the start-up); PortTaken if the
    server exited because another process took its port, RuntimeError if it exited otherwise or
    was not up within START_S."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = log.read_text(errors="replace")[-2000:]
            if says_port_taken(out):
                raise PortTaken(port, out)
            raise RuntimeError(f"server exited: {out}")
        try:
            page_url = f"http://127.0.0.1:{port}/"  # loopback only, built here
            with urllib.request.urlopen(page_url, timeout=2):  # noqa: S310 - fixed loopback URL
                if READY in log.read_bytes():
                    return
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start within {START_S} s")
