"""The page's process runs on jemalloc where the system has it (serve/page/allocator.py): the
choice, the plan, the environment of the re-exec, and `flaxdigits serve` itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flaxdigits.serve.page import allocator
from tests.support.guard import page_process

LIB = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, "auto"),
        (None, {allocator.ENV: "system"}, "system"),
        ("jemalloc", {allocator.ENV: "system"}, "jemalloc"),
        (None, {allocator.ENV: " JEMALLOC "}, "jemalloc"),
    ],
)
def test_the_flag_wins_over_the_environment_which_wins_over_auto(flag, env, expected):
    assert allocator.choice_of(flag, env) == expected


def test_an_unknown_allocator_is_one_clear_error():
    with pytest.raises(allocator.AllocatorError, match="choose one of auto, jemalloc, system"):
        allocator.choice_of(None, {allocator.ENV: "tcmalloc"})


def plan(choice, environ=None, *, linux=True, is_loaded=False, found=LIB):
    return allocator.plan(choice, environ or {}, linux=linux, is_loaded=is_loaded, found=found)


def test_auto_and_jemalloc_preload_the_library_found():
    assert plan("auto") == (LIB, "memory allocator: jemalloc")
    assert plan("jemalloc") == (LIB, "memory allocator: jemalloc")


def test_nothing_is_preloaded_when_asked_for_the_system_or_already_on_jemalloc():
    assert plan("system")[0] is None and "asked for" in plan("system")[1]
    assert plan("auto", is_loaded=True) == (None, "memory allocator: jemalloc")
    assert plan("system", is_loaded=True) == (None, "memory allocator: jemalloc")


def test_auto_without_the_library_stays_on_malloc_and_says_how_to_get_it():
    library, line = plan("auto", found=None)
    assert library is None and "libjemalloc2" in line and "docs/hosting.md" in line
    with pytest.raises(allocator.AllocatorError, match="apt install libjemalloc2"):
        plan("jemalloc", found=None)


def test_a_preload_that_did_not_take_is_not_tried_twice():
    tried = {allocator.TRIED_ENV: "1"}
    library, line = plan("auto", tried)
    assert library is None and "did not load" in line
    with pytest.raises(allocator.AllocatorError, match="did not load"):
        plan("jemalloc", tried)


def test_off_linux_nothing_is_preloaded():
    assert plan("auto", linux=False)[0] is None
    with pytest.raises(allocator.AllocatorError, match="Linux only"):
        plan("jemalloc", linux=False)


def test_the_reexec_environment_puts_the_library_first_and_keeps_the_rest():
    env = allocator.preload_env({"LD_PRELOAD": "/opt/other.so", "PATH": "/bin"}, LIB)
    assert env["LD_PRELOAD"] == f"{LIB} /opt/other.so"
    assert env["PATH"] == "/bin" and env[allocator.TRIED_ENV] == "1"
    assert allocator.preload_env({}, LIB)["LD_PRELOAD"] == LIB


def test_only_the_listed_system_folders_are_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / allocator.LIBRARY).write_bytes(b"not a library")  # in the working directory
    assert allocator.find([str(tmp_path / "none")]) is None
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / allocator.LIBRARY).write_bytes(b"")
    assert allocator.find([str(tmp_path / "none"), str(lib)]) == str(lib / allocator.LIBRARY)


def test_loaded_reads_the_process_maps():
    assert allocator.loaded(f"7f00-7f10 r-xp 0 08:01 1 {LIB}\n")
    assert not allocator.loaded("7f00-7f10 r-xp 0 08:01 1 /usr/lib/libc.so.6\n")


# ------------------------------------------------ the real thing, where the system has it

FOUND = allocator.find()


def needs_jemalloc():
    """Skip where the system has no libjemalloc.so.2, unless FLAXDIGITS_REQUIRE_JEMALLOC is set
    (CI installs it: there the test must run)."""
    if FOUND is None:
        if os.environ.get("FLAXDIGITS_REQUIRE_JEMALLOC"):
            pytest.fail(f"no {allocator.LIBRARY} in {allocator.SEARCH_DIRS}: make serve-deps")
        pytest.skip(f"no {allocator.LIBRARY} on this system")


def run_python(code: str, **env: str) -> list[str]:
    """`python -c code` with the allocator's variables cleared (conftest sets system), then env;
    its output lines."""
    clean = {k: v for k, v in os.environ.items() if k not in (allocator.ENV, allocator.TRIED_ENV)}
    clean.pop("LD_PRELOAD", None)
    out = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.splitlines()


# What it prints before the allocator is chosen comes out once per exec, the pid each time.
REEXEC = (
    "import os, sys; from flaxdigits.serve.page import allocator as a; "
    "print('start', os.getpid(), sys.argv[1:]); print(a.use_jemalloc(None), a.loaded())"
)


def test_a_process_reexecutes_itself_once_on_jemalloc_with_the_same_arguments():
    needs_jemalloc()
    first, again, end = run_python(REEXEC)
    assert first == again and first.startswith("start ")  # the same pid: exec, not a child
    assert end == "memory allocator: jemalloc True"
    first, end = run_python(REEXEC, **{allocator.ENV: "system"})
    assert end == "memory allocator: the system's malloc (asked for) False"


def test_flaxdigits_serve_runs_the_page_on_jemalloc_unless_told_otherwise(toy_dir, tmp_path):
    needs_jemalloc()
    for env, expected in (({allocator.ENV: "auto"}, True), ({allocator.ENV: "system"}, False)):
        log = tmp_path / f"serve-{expected}.log"
        with page_process(toy_dir, tmp_path, log, env=env) as (proc, _port):
            maps = Path(f"/proc/{proc.pid}/maps").read_text()
            assert allocator.loaded(maps) is expected
        first = log.read_text().splitlines()[0]
        assert first.startswith("memory allocator: ")
        assert ("jemalloc" in first) is expected
