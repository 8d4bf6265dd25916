"""Checkpoints: two newest kept, hash-checked before parsing, foreign or other-model refused."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from flaxdigits import checkpoint
from flaxdigits.config import TrainConfig
from flaxdigits.runs import load_run
from flaxdigits.state import init_state

CONFIG = TrainConfig(model="mlp", epochs=2, batch_size=100)


@pytest.fixture
def saved_run(tmp_path):
    """A run dir with checkpoints of epochs 1 and 2 (fresh states: no training needed)."""
    run = tmp_path / "run"
    _, state = init_state(CONFIG)
    meta = {"config": CONFIG.to_dict(), "history": [], "snapshots": {}}
    for epoch in (1, 2):
        checkpoint.save(run, state._replace(step=state.step + epoch), meta, epoch=epoch)
    return run


def test_checkpoint_keeps_the_two_newest_files(saved_run):
    _, state = init_state(CONFIG)
    meta = {"config": CONFIG.to_dict(), "history": [], "snapshots": {}}
    checkpoint.save(saved_run, state, meta, epoch=3)
    assert sorted(p.name for p in saved_run.glob("ckpt-*.msgpack")) == [
        "ckpt-0002.msgpack",
        "ckpt-0003.msgpack",
    ]
    assert checkpoint.pointer(saved_run)["epoch"] == 3
    assert not list(saved_run.glob("*.tmp"))


def test_restore_gives_back_the_saved_state_and_meta(saved_run):
    _, fresh = init_state(CONFIG)
    state, meta = checkpoint.restore(saved_run, fresh)
    assert int(state.step) == 2 and meta["config"] == CONFIG.to_dict()
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(fresh.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_tampered_checkpoint_is_refused(saved_run):
    path = saved_run / checkpoint.pointer(saved_run)["file"]
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(checkpoint.CheckpointError, match="does not match the pointer"):
        load_run(saved_run)


def test_truncated_checkpoint_is_refused(saved_run):
    path = saved_run / checkpoint.pointer(saved_run)["file"]
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or modified"):
        load_run(saved_run)


def test_missing_and_foreign_checkpoints_are_refused(tmp_path, saved_run):
    with pytest.raises(checkpoint.CheckpointError, match="has no checkpoint"):
        load_run(tmp_path / "nothing-here")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / checkpoint.POINTER).write_text('{"hello": "world"}')
    with pytest.raises(checkpoint.CheckpointError, match="not a flaxdigits checkpoint pointer"):
        load_run(tmp_path / "foreign")


def test_checkpoint_of_another_model_does_not_load(saved_run):
    _, cnn_template = init_state(TrainConfig(model="cnn"))
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this model"):
        checkpoint.restore(saved_run, cnn_template)


def test_a_cnn_checkpoint_from_before_the_standard_conv_layout_still_loads(tmp_path):
    # Until v0.1 the CNN kept its conv bias beside the layer, as params['conv_bias'].
    config = TrainConfig(model="cnn", epochs=1)
    _, state = init_state(config)
    meta = {"config": config.to_dict(), "history": [], "snapshots": {}}
    checkpoint.save(tmp_path, state, meta, epoch=1)
    saved = checkpoint.read(tmp_path)
    old = {k.replace("['conv']['bias']", "['conv_bias']"): v for k, v in saved["state"].items()}
    assert old != saved["state"] and any("['conv_bias']" in k for k in old)
    restored = checkpoint.fill({"meta": saved["meta"], "state": old}, state)
    np.testing.assert_array_equal(
        np.asarray(restored.params["conv"]["bias"][...]),
        np.asarray(state.params["conv"]["bias"][...]),
    )


def test_pointer_names_the_file_and_its_hash(saved_run):
    ptr = json.loads((saved_run / checkpoint.POINTER).read_text())
    assert ptr["file"] == "ckpt-0002.msgpack" and ptr["epoch"] == 2 and len(ptr["sha256"]) == 64
