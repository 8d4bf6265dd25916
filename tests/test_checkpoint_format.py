"""The checkpoint format's promises (flaxdigits/checkpoint.py's docstring), one by one:

the file name and payload layout, the pointer's fields, pruning to the two newest files without
ever deleting the one just written, stale temp files cleared, and every way a pointer, a file or
a tensor can be wrong refused with a message that names it. A small pytree stands in for a
training state, so nothing here builds a model. Written against the mutants `make mutation`
showed surviving in flaxdigits/checkpoint.py (TESTING.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import NamedTuple

import jax
import numpy as np
import pytest
from flax import serialization

from flaxdigits import checkpoint
from flaxdigits.checkpoint import FORMAT, POINTER, CheckpointError


class State(NamedTuple):
    step: np.ndarray
    params: dict


def _state(step: int = 7, scale: float = 1.0) -> State:
    return State(
        step=np.asarray(step, np.int32),
        params={
            "dense": {"kernel": np.full((3, 2), scale, np.float32)},
            "bias": np.arange(2, dtype=np.float32) * scale,
        },
    )


META = {"config": {"model": "mlp"}, "history": [1, 2]}


def _write(run, payload: dict) -> None:
    """A checkpoint file holding payload, under a pointer with its true sha256."""
    blob = serialization.msgpack_serialize(payload)
    (run / "ckpt-0001.msgpack").write_bytes(blob)
    ptr = {
        "format": FORMAT,
        "file": "ckpt-0001.msgpack",
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    (run / POINTER).write_text(json.dumps(ptr))


# ---------------------------------------------------------------------------------- writing


def test_save_writes_the_documented_file_and_pointer(tmp_path):
    run = tmp_path / "a" / "run"  # parents are created
    assert not checkpoint.exists(run)
    path = checkpoint.save(run, _state(step=7), META, epoch=3)
    assert path == run / "ckpt-0003.msgpack" and checkpoint.exists(run)
    blob = path.read_bytes()
    ptr = json.loads((run / POINTER).read_text())
    assert ptr == {
        "format": FORMAT,
        "file": "ckpt-0003.msgpack",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
        "epoch": 3,
        "step": 7,
    }
    payload = serialization.msgpack_restore(blob)
    assert payload["format"] == FORMAT
    assert json.loads(payload["meta"]) == META
    assert sorted(payload["state"]) == sorted(
        jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(_state())[0]
    )
    np.testing.assert_array_equal(payload["state"][".params['dense']['kernel']"], np.ones((3, 2)))
    assert checkpoint.pointer(run) == ptr


def test_epochs_past_9999_keep_their_number(tmp_path):
    assert checkpoint.save(tmp_path, _state(), META, epoch=12345).name == "ckpt-12345.msgpack"
    assert checkpoint.read(tmp_path)["meta"] == META


def test_pruning_keeps_the_two_newest_and_nothing_else_is_touched(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "ckpt-1.msgpack").write_bytes(b"not ours: three digits short")
    for epoch in (1, 2, 3, 4):
        checkpoint.save(tmp_path, _state(step=epoch), META, epoch=epoch)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json",
        "ckpt-0003.msgpack",
        "ckpt-0004.msgpack",
        "ckpt-1.msgpack",
        "metrics.json",
    ]


def test_an_older_epoch_saved_last_is_kept_and_pointed_to(tmp_path):
    # A run restarted from scratch over old files: the file just written must survive pruning.
    for epoch in (5, 6):
        checkpoint.save(tmp_path, _state(step=epoch), META, epoch=epoch)
    checkpoint.save(tmp_path, _state(step=1, scale=2.0), META, epoch=1)
    assert checkpoint.pointer(tmp_path)["file"] == "ckpt-0001.msgpack"
    state, _ = checkpoint.restore(tmp_path, _state())
    assert int(state.step) == 1
    np.testing.assert_array_equal(np.asarray(state.params["bias"]), [0.0, 2.0])


def test_temp_files_of_a_killed_write_are_cleared_on_the_next_save(tmp_path):
    tmp_path.joinpath(".ckpt-0002.msgpack.x1y2.tmp").write_bytes(b"half a file")
    tmp_path.joinpath(".checkpoint.json.abc.tmp").write_bytes(b"{")
    tmp_path.joinpath("keep.tmp").write_bytes(b"not a hidden temp file")
    checkpoint.save(tmp_path, _state(), META, epoch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.json",
        "ckpt-0002.msgpack",
        "keep.tmp",
    ]


# --------------------------------------------------------------------------------- pointers


def test_a_missing_pointer_says_how_to_make_one(tmp_path):
    message = (
        f"{tmp_path} has no checkpoint (checkpoint.json missing): train it first with "
        f"`flaxdigits train --out {tmp_path}`"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.pointer(tmp_path)
    (tmp_path / POINTER).mkdir()  # a directory is no pointer either
    assert not checkpoint.exists(tmp_path)
    with pytest.raises(CheckpointError, match="has no checkpoint"):
        checkpoint.pointer(tmp_path)


@pytest.mark.parametrize("text", ["{", b"\xff\xfe{}", ""])
def test_an_unreadable_pointer_is_refused(tmp_path, text):
    path = tmp_path / POINTER
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: unreadable checkpoint"):
        checkpoint.pointer(tmp_path)


GOOD = {"format": FORMAT, "file": "ckpt-0001.msgpack", "sha256": "0" * 64}


@pytest.mark.parametrize(
    "ptr",
    [
        [GOOD],
        {**GOOD, "format": "flaxdigits.checkpoint.v0"},
        {k: v for k, v in GOOD.items() if k != "format"},
        {**GOOD, "file": 1},
        {**GOOD, "file": "../ckpt-0001.msgpack"},
        {**GOOD, "file": "ckpt-001.msgpack"},
        {**GOOD, "file": "ckpt-0001.msgpack.bak"},
        {**GOOD, "file": "xckpt-0001.msgpack"},
        {**GOOD, "sha256": None},
        {k: v for k, v in GOOD.items() if k != "sha256"},
    ],
)
def test_each_pointer_field_is_checked(tmp_path, ptr):
    path = tmp_path / POINTER
    path.write_text(json.dumps(ptr))
    message = f"{path}: not a flaxdigits checkpoint pointer ({FORMAT})"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.pointer(tmp_path)


def test_a_well_formed_pointer_is_returned_as_written(tmp_path):
    (tmp_path / POINTER).write_text(json.dumps(GOOD))
    assert checkpoint.pointer(tmp_path) == GOOD


# ---------------------------------------------------------------------------------- reading


def test_a_pointer_to_a_missing_file_is_refused(tmp_path):
    (tmp_path / POINTER).write_text(json.dumps(GOOD))
    path = tmp_path / "ckpt-0001.msgpack"
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: cannot read checkpoint"):
        checkpoint.read(tmp_path)


def test_a_changed_file_quotes_both_digests(tmp_path):
    checkpoint.save(tmp_path, _state(), META, epoch=1)
    path = tmp_path / "ckpt-0001.msgpack"
    want = checkpoint.pointer(tmp_path)["sha256"]
    path.write_bytes(path.read_bytes() + b"\0")
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    message = (
        f"{path}: sha256 {got[:12]}… does not match the pointer's {want[:12]}… "
        "(truncated or modified); retrain, or restore the file"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.read(tmp_path)


def test_hashed_bytes_that_are_not_msgpack_are_refused(tmp_path):
    blob = b"\xc1 never valid msgpack"
    (tmp_path / "ckpt-0001.msgpack").write_bytes(blob)
    ptr = {**GOOD, "sha256": hashlib.sha256(blob).hexdigest()}
    (tmp_path / POINTER).write_text(json.dumps(ptr))
    path = tmp_path / "ckpt-0001.msgpack"
    with pytest.raises(
        CheckpointError, match=rf"^{re.escape(str(path))}: not a flaxdigits checkpoint \(\w+\)$"
    ):
        checkpoint.read(tmp_path)


@pytest.mark.parametrize(
    "payload",
    [
        {"format": "flaxdigits.checkpoint.v2", "meta": "{}", "state": {"a": np.zeros(1)}},
        {"format": FORMAT, "meta": "[]", "state": {"a": np.zeros(1)}},
        {"format": FORMAT, "meta": "{}", "state": [np.zeros(1)]},
    ],
)
def test_a_payload_of_another_format_is_refused(tmp_path, payload):
    _write(tmp_path, payload)
    message = f"{tmp_path / 'ckpt-0001.msgpack'}: not a {FORMAT} checkpoint"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.read(tmp_path)


@pytest.mark.parametrize(
    "payload",
    [
        {"meta": "{}", "state": {}},  # no format
        {"format": FORMAT, "state": {}},  # no meta
        {"format": FORMAT, "meta": "{", "state": {}},  # meta not JSON
        {"format": FORMAT, "meta": "{}"},  # no state
    ],
)
def test_a_payload_missing_a_part_is_refused(tmp_path, payload):
    _write(tmp_path, payload)
    with pytest.raises(
        CheckpointError, match=r"not a flaxdigits checkpoint \((KeyError|JSONDecodeError)\)$"
    ):
        checkpoint.read(tmp_path)


def test_read_returns_meta_and_state_only(tmp_path):
    checkpoint.save(tmp_path, _state(), META, epoch=1)
    got = checkpoint.read(tmp_path)
    assert sorted(got) == ["meta", "state"] and got["meta"] == META


# ---------------------------------------------------------------------------------- filling


def _saved(**state) -> dict:
    return {"meta": META, "state": state}


KEYS = {
    ".step": np.asarray(7, np.int32),
    ".params['bias']": np.zeros(2, np.float32),
    ".params['dense']['kernel']": np.zeros((3, 2), np.float32),
}


def test_fill_names_missing_and_unexpected_paths(tmp_path):
    state = dict(KEYS)
    del state[".params['bias']"]
    state[".params['other']"] = np.zeros(1, np.float32)
    message = (
        "run7: checkpoint does not fit this model (missing [\".params['bias']\"], "
        "unexpected [\".params['other']\"])"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.fill(_saved(**state), _state(), "run7")


@pytest.mark.parametrize(
    ("value", "described"),
    [
        (np.zeros(3, np.float32), "(3,) float32, the model needs (2,) float32"),
        (np.zeros(2, np.float64), "(2,) float64, the model needs (2,) float32"),
        (np.zeros((2, 1), np.float32), "(2, 1) float32, the model needs (2,) float32"),
        ([0.0, 0.0], "None list, the model needs (2,) float32"),
    ],
)
def test_fill_refuses_a_tensor_of_another_shape_or_dtype(value, described):
    state = dict(KEYS, **{".params['bias']": value})
    message = f"checkpoint: .params['bias'] is {described}"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.fill(_saved(**state), _state())


def test_fill_puts_each_array_in_its_own_place():
    state = {
        ".step": np.asarray(3, np.int32),
        ".params['bias']": np.array([4.0, 5.0], np.float32),
        ".params['dense']['kernel']": np.arange(6, dtype=np.float32).reshape(3, 2),
    }
    got = checkpoint.fill(_saved(**state), _state())
    assert int(got.step) == 3
    np.testing.assert_array_equal(np.asarray(got.params["bias"]), [4.0, 5.0])
    np.testing.assert_array_equal(
        np.asarray(got.params["dense"]["kernel"]), np.arange(6).reshape(3, 2)
    )


def test_restore_names_the_run_dir_when_it_does_not_fit(tmp_path):
    checkpoint.save(tmp_path, _state(), META, epoch=1)
    other = State(step=np.asarray(0, np.int32), params={"bias": np.zeros(5, np.float32)})
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(tmp_path))}: checkpoint does not"):
        checkpoint.restore(tmp_path, other)


def test_legacy_conv_bias_paths_are_renamed_on_load():
    template = {"conv": {"bias": np.zeros(2, np.float32)}}
    got = checkpoint.fill(_saved(**{"['conv_bias']": np.ones(2, np.float32)}), template)
    np.testing.assert_array_equal(np.asarray(got["conv"]["bias"]), [1.0, 1.0])
