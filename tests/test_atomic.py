"""Atomic writes (flaxdigits/core/atomic.py): a reader or a crash sees the old file or the new one.

What that takes, each checked here: the temp file lives beside the target under the hidden
`.NAME.*.tmp` name the checkpoint cleaner looks for; its bytes are flushed before the fsync; the
rename comes after the fsync and the directory is fsynced after the rename; a failure at any step
leaves the old file and no temp file; the mode and the JSON layout are as documented.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from flaxdigits.core import atomic


def _fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_bytes_text_and_json_land_with_parents_created(tmp_path):
    target = tmp_path / "a" / "b" / "f.bin"
    assert atomic.write_bytes_atomic(target, b"\x00\xff") == target
    assert target.read_bytes() == b"\x00\xff"
    text = tmp_path / "t.txt"
    assert atomic.write_text_atomic(text, "é ✓") == text
    assert text.read_bytes() == "é ✓".encode()
    doc = tmp_path / "d.json"
    assert atomic.write_json_atomic(str(doc), {"z": 1, "a": [1, {"b": None}]}) == doc
    assert (
        doc.read_text() == '{\n  "z": 1,\n  "a": [\n    1,\n    {\n      "b": null\n    }\n  ]\n}\n'
    )
    assert json.loads(doc.read_text()) == {"z": 1, "a": [1, {"b": None}]}


def test_mode_is_applied_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        default = atomic.write_bytes_atomic(tmp_path / "d", b"x")
        private = atomic.write_bytes_atomic(tmp_path / "p", b"x", mode=0o600)
        wide = atomic.write_bytes_atomic(tmp_path / "w", b"x", mode=0o666)
    finally:
        os.umask(old)
    assert stat.S_IMODE(default.stat().st_mode) == 0o644
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(wide.stat().st_mode) == 0o666


def test_the_data_is_on_disk_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            events.append(("fsync dir", os.readlink(f"/proc/self/fd/{fd}")))
        else:
            events.append(("fsync file", info.st_size))
        return real_fsync(fd)

    def replace(src, dst):
        src = os.fspath(src)
        events.append(("replace", os.path.dirname(src), os.path.basename(src), os.fspath(dst)))
        assert target.read_bytes() == b"old"  # the old file is whole until the rename
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic.write_bytes_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert events[0] == ("fsync file", len(b"new contents"))  # flushed before the fsync
    kind, folder, name, dst = events[1]
    assert kind == "replace" and folder == str(tmp_path) and dst == str(target)
    assert name.startswith(".model.onnx.") and name.endswith(".tmp")  # what save() clears
    assert events[2:] == [("fsync dir", str(tmp_path))]


@pytest.mark.parametrize("step", ["fsync", "chmod", "replace"])
def test_a_failure_at_any_step_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, step):
    target = tmp_path / "checkpoint.json"
    target.write_text("old")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, step, boom)
    fds = _fds()
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]
    assert _fds() == fds


def test_an_interrupt_mid_write_also_removes_the_temp(tmp_path, monkeypatch):
    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes_atomic(tmp_path / "f", b"x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_directory_fsync_is_best_effort_and_closes_what_it_opens(tmp_path, monkeypatch):
    fds = _fds()
    atomic._fsync_dir(tmp_path / "missing")  # cannot be opened: nothing to do
    real_fsync = os.fsync
    opened = []

    def fsync(fd):
        opened.append(fd)
        raise OSError(22, "Invalid argument")  # some file systems refuse a directory fsync

    monkeypatch.setattr(os, "fsync", fsync)
    atomic._fsync_dir(tmp_path)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert len(opened) == 1 and _fds() == fds
    with pytest.raises(OSError):
        os.fstat(opened[0])  # closed


def test_directory_fsync_opens_read_only(tmp_path, monkeypatch):
    flags = []
    real_open = os.open

    def spy(path, flag, *args, **kwargs):
        flags.append(flag)
        return real_open(path, flag, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    atomic._fsync_dir(tmp_path)
    assert flags == [os.O_RDONLY]


# --------------------------------------------------------------- the test-only pause hook
# tests/test_faults.py kills processes paused by it; here the hook's own promises, in-process,
# with the wait replaced by a check of what is on disk at that moment.


@pytest.fixture
def pause(tmp_path, monkeypatch):
    """Arm the hook for a GLOB[@N]; returns (marker path, [what the disk held while paused])."""
    marker = tmp_path / "paused.json"
    seen = []

    def arm(spec: str):
        monkeypatch.setattr(atomic, "_matching_writes", 0)
        monkeypatch.setenv(atomic.PAUSE_ENV, spec)
        monkeypatch.setenv(atomic.PAUSED_ENV, str(marker))
        return marker, seen

    def sleep(seconds):
        note = json.loads(marker.read_text())
        temp = Path(note["temp"])
        if temp.is_dir():  # a directory paused before its rename: every file it holds
            files = (p for p in temp.rglob("*") if p.is_file())
            seen.append(
                (seconds, note, {p.relative_to(temp).as_posix(): p.read_bytes() for p in files})
            )
            return
        with open(temp, "rb") as f:
            seen.append((seconds, note, f.read()))

    monkeypatch.setattr(atomic.time, "sleep", sleep)
    return arm


def test_the_paused_write_holds_half_the_bytes_and_says_where(tmp_path, pause):
    marker, seen = pause("*.msgpack")
    target = tmp_path / "run" / "ckpt-0001.msgpack"
    atomic.write_text_atomic(tmp_path / "metrics.json", "{}")  # another name: not paused
    message = f"{atomic.PAUSE_ENV}: paused in the write of {target} and nobody killed it"
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        atomic.write_bytes_atomic(target, b"0123456789")
    ((seconds, note, on_disk),) = seen
    assert seconds == atomic.PAUSE_LIMIT_S == 600
    assert note == {"target": str(target), "temp": note["temp"], "written": 5, "size": 10}
    assert os.path.dirname(note["temp"]) == str(target.parent) and on_disk == b"01234"
    assert not os.path.exists(note["temp"]) and not target.exists()  # given up: cleaned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "paused.json", "run"]


def test_a_directory_pauses_whole_just_before_its_rename(tmp_path, pause):
    marker, seen = pause("ckpt_*@2")
    temp = tmp_path / "ckpt_0002.orbax-checkpoint-tmp-1"
    (temp / "state").mkdir(parents=True)
    (temp / "meta").write_bytes(b"abc")
    (temp / "state" / "data").write_bytes(b"0123456789")
    atomic.pause_before_rename(tmp_path / "ckpt_0001", temp)  # the first match: not paused
    atomic.pause_before_rename(tmp_path / "other", temp)  # another name: not paused
    assert not marker.exists()
    target = tmp_path / "ckpt_0002"
    message = f"{atomic.PAUSE_ENV}: paused in the write of {target} and nobody killed it"
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        atomic.pause_before_rename(target, temp)
    ((seconds, note, held),) = seen
    assert seconds == atomic.PAUSE_LIMIT_S
    assert note == {"target": str(target), "temp": str(temp), "written": 13, "size": 13}
    assert held == {"meta": b"abc", "state/data": b"0123456789"} and not target.exists()


def test_the_nth_matching_write_is_the_one_paused(tmp_path, pause):
    _, seen = pause("ckpt-*@3")
    for epoch in (1, 2):
        atomic.write_bytes_atomic(tmp_path / f"ckpt-{epoch}", b"ab")
    atomic.write_bytes_atomic(tmp_path / "other", b"ab")  # does not match: not counted
    with pytest.raises(RuntimeError):
        atomic.write_bytes_atomic(tmp_path / "ckpt-3", b"abcd")
    assert [note["target"] for _, note, _ in seen] == [str(tmp_path / "ckpt-3")]
    atomic.write_bytes_atomic(tmp_path / "ckpt-4", b"ab")  # only the 3rd
    assert len(seen) == 1


def test_the_hook_matches_the_whole_name_case_sensitively(tmp_path, pause):
    _, seen = pause("model.onnx")
    atomic.write_bytes_atomic(tmp_path / "MODEL.ONNX", b"x")
    atomic.write_bytes_atomic(tmp_path / "model.onnx.json", b"x")
    assert seen == []
    with pytest.raises(RuntimeError):
        atomic.write_bytes_atomic(tmp_path / "model.onnx", b"xy")
