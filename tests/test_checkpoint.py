"""Checkpoints: two newest kept, hash-checked before parsing, foreign or other-model refused."""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np
import pytest

from flaxdigits.runs import load_run
from flaxdigits.training import checkpoint
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.state import abstract_state, init_state

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


def _largest_file(run):
    step_dir = run / checkpoint.pointer(run)["dir"]
    return max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_checkpoint_keeps_the_two_newest_steps(saved_run):
    _, state = init_state(CONFIG)
    meta = {"config": CONFIG.to_dict(), "history": [], "snapshots": {}}
    checkpoint.save(saved_run, state, meta, epoch=3)
    steps = sorted(p.name for p in (saved_run / checkpoint.STEPS).iterdir() if p.is_dir())
    assert steps == ["ckpt_0002", "ckpt_0003"]
    assert checkpoint.pointer(saved_run)["epoch"] == 3
    assert not list(saved_run.rglob("*.tmp")) and not list(saved_run.rglob("*tmp-*"))


def test_restore_gives_back_the_saved_state_and_meta(saved_run):
    _, fresh = init_state(CONFIG)
    state, meta = checkpoint.restore(saved_run, fresh)
    assert int(state.step) == 2 and meta["config"] == CONFIG.to_dict()
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(fresh), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(fresh.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_restore_into_an_abstract_state_places_arrays_with_the_sharding(saved_run):
    _, template = abstract_state(CONFIG)
    device = jax.local_devices()[0]
    state, _ = checkpoint.restore(saved_run, template, jax.sharding.SingleDeviceSharding(device))
    assert all(leaf.devices() == {device} for leaf in jax.tree.leaves(state))


def test_tampered_checkpoint_is_refused(saved_run):
    path = _largest_file(saved_run)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(checkpoint.CheckpointError, match="does not match the pointer"):
        load_run(saved_run)


def test_truncated_checkpoint_is_refused(saved_run):
    path = _largest_file(saved_run)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or modified"):
        load_run(saved_run)


def test_a_file_removed_from_or_added_to_a_step_is_refused(saved_run):
    step_dir = saved_run / checkpoint.pointer(saved_run)["dir"]
    (step_dir / "state" / "extra").write_bytes(b"not ours")
    with pytest.raises(checkpoint.CheckpointError, match=r"unexpected \['state/extra'\]"):
        load_run(saved_run)
    (step_dir / "state" / "extra").unlink()
    (step_dir / "meta" / "metadata").unlink()
    with pytest.raises(checkpoint.CheckpointError, match=r"missing \['meta/metadata'\]"):
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


def test_pointer_names_the_step_and_its_digest(saved_run):
    ptr = json.loads((saved_run / checkpoint.POINTER).read_text())
    assert ptr["dir"] == "checkpoints/ckpt_0002" and ptr["epoch"] == 2 and ptr["step"] == 2
    assert len(ptr["sha256"]) == 64 and "meta/metadata" in ptr["files"]
    assert ptr["size"] == sum(f["size"] for f in ptr["files"].values())


def _save_with_timings(run, state, seconds: float) -> dict:
    """Save state as epoch 1 with a history of the given wall-clock timings: its pointer."""
    record = {"epoch": 1, "seconds": seconds, "images_per_second": 1e4 / seconds}
    record |= {"val_seconds": seconds / 10, "test_seconds": seconds / 10}
    meta = {"config": CONFIG.to_dict(), "history": [record], "snapshots": {}}
    checkpoint.save(run, state, meta, epoch=1)
    return checkpoint.pointer(run)


def test_state_digest_ignores_timings_and_orbax_files_but_sees_one_parameter(tmp_path):
    _, state = init_state(CONFIG)
    a = _save_with_timings(tmp_path / "a", state, 1.5)
    b = _save_with_timings(tmp_path / "b", state, 2.5)
    assert a["sha256"] != b["sha256"]  # the files: Orbax's timestamps and ids, the timings
    assert a["state_sha256"] == b["state_sha256"]
    assert load_run(tmp_path / "b").checkpoint_state_sha256 == a["state_sha256"]
    kernel, *rest = jax.tree.leaves(state.params)
    nudged = np.array(kernel)
    nudged.flat[0] = np.nextafter(nudged.flat[0], np.float32(np.inf))  # one ulp, one scalar
    params = jax.tree.unflatten(jax.tree.structure(state.params), [nudged, *rest])
    c = _save_with_timings(tmp_path / "c", state._replace(params=params), 1.5)
    assert c["state_sha256"] != a["state_sha256"]


def test_state_digest_is_path_dtype_shape_and_little_endian_bytes_in_path_order():
    tree = {"b": np.array([1, 2], np.int32), "a": np.float32(0.5)}
    want = hashlib.sha256()
    want.update(b'["a", "float32", []]\n' + b"\x00\x00\x00\x3f")
    want.update(b'["b", "int32", [2]]\n' + b"\x01\x00\x00\x00\x02\x00\x00\x00")
    assert checkpoint.state_digest(tree) == want.hexdigest()


def test_a_pointer_without_a_state_digest_loads_with_the_same_one_computed(saved_run):
    path = saved_run / checkpoint.POINTER
    ptr = json.loads(path.read_text())
    recorded = ptr.pop("state_sha256")
    path.write_text(json.dumps(ptr))  # as pointers were written before it was recorded
    assert load_run(saved_run).checkpoint_state_sha256 == recorded


def test_a_state_digest_that_does_not_match_the_restored_arrays_is_refused(saved_run):
    path = saved_run / checkpoint.POINTER
    ptr = json.loads(path.read_text())
    path.write_text(json.dumps(ptr | {"state_sha256": "0" * 64}))
    with pytest.raises(checkpoint.CheckpointError, match="recorded when they were saved"):
        load_run(saved_run)
    for bad in ("not hex", None, "0" * 63):
        path.write_text(json.dumps(ptr | {"state_sha256": bad}))
        with pytest.raises(checkpoint.CheckpointError, match="not a flaxdigits checkpoint pointer"):
            load_run(saved_run)
