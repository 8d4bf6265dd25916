"""The checkpoint format's promises (flaxdigits/training/checkpoint.py's docstring), one by one:

the step directory and pointer layout, the pointer's manifest of every file, the two newest steps
kept without ever deleting the one just written, a killed save's leftovers cleared, and every way
a pointer, a file or a tensor can be wrong refused with a message that names it, before Orbax
parses anything. A small pytree stands in for a training state, so nothing here builds a model.
"""

from __future__ import annotations

import hashlib
import json
import re
import types
from typing import NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from flaxdigits.core import atomic
from flaxdigits.training import checkpoint
from flaxdigits.training.checkpoint import FORMAT, POINTER, STEPS, CheckpointError


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


def _steps(run) -> list[str]:
    return sorted(p.name for p in (run / STEPS).iterdir())


def _rewrite_pointer(run, **changes) -> dict:
    ptr = json.loads((run / POINTER).read_text()) | changes
    (run / POINTER).write_text(json.dumps(ptr))
    return ptr


# ---------------------------------------------------------------------------------- writing


def test_save_writes_an_orbax_step_and_a_pointer_listing_every_file(tmp_path):
    run = tmp_path / "a" / "run"  # parents are created
    assert not checkpoint.exists(run)
    path = checkpoint.save(run, _state(step=7), META, epoch=3)
    assert path == run / STEPS / "ckpt_0003" and checkpoint.exists(run)
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    ptr = json.loads((run / POINTER).read_text())
    assert sorted(ptr["files"]) == files and "meta/metadata" in files
    for name, entry in ptr["files"].items():
        blob = (path / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
    digest = hashlib.sha256(json.dumps(ptr["files"], sort_keys=True).encode()).hexdigest()
    assert {k: v for k, v in ptr.items() if k != "files"} == {
        "format": FORMAT,
        "dir": "checkpoints/ckpt_0003",
        "epoch": 3,
        "step": 7,
        "sha256": digest,
        "state_sha256": checkpoint.state_digest(_state(step=7)),
        "size": sum(f["size"] for f in ptr["files"].values()),
    }
    assert json.loads((path / "meta" / "metadata").read_text()) == META
    assert checkpoint.pointer(run) == ptr


def test_epochs_past_9999_keep_their_number(tmp_path):
    assert checkpoint.save(tmp_path, _state(), META, epoch=12345).name == "ckpt_12345"
    assert checkpoint.read(tmp_path).meta == META


def test_the_two_newest_steps_are_kept_and_nothing_else_is_touched(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    for epoch in (1, 2, 3, 4):
        checkpoint.save(tmp_path, _state(step=epoch), META, epoch=epoch)
    assert _steps(tmp_path) == ["ckpt_0003", "ckpt_0004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [POINTER, STEPS, "metrics.json"]


def test_an_older_epoch_saved_last_is_kept_and_pointed_to(tmp_path):
    # Newer steps the pointer does not name (a save killed before its pointer moved, a run
    # restarted over old files) give way to the step just written.
    for epoch in (5, 6):
        checkpoint.save(tmp_path, _state(step=epoch), META, epoch=epoch)
    checkpoint.save(tmp_path, _state(step=1, scale=2.0), META, epoch=1)
    assert checkpoint.pointer(tmp_path)["dir"] == "checkpoints/ckpt_0001"
    assert _steps(tmp_path) == ["ckpt_0001"]
    state, _ = checkpoint.restore(tmp_path, _state())
    assert int(state.step) == 1
    np.testing.assert_array_equal(np.asarray(state.params["bias"]), [0.0, 2.0])


def test_a_killed_saves_temporary_step_is_cleared_on_the_next_save(tmp_path):
    checkpoint.save(tmp_path, _state(), META, epoch=1)
    leftover = tmp_path / STEPS / "ckpt_0002.orbax-checkpoint-tmp-1234"
    (leftover / "state").mkdir(parents=True)
    (leftover / "state" / "half").write_bytes(b"half a step")
    checkpoint.save(tmp_path, _state(), META, epoch=2)
    assert not leftover.exists() and _steps(tmp_path) == ["ckpt_0001", "ckpt_0002"]


def test_a_killed_pointer_writes_temp_file_is_cleared_on_the_next_save(tmp_path):
    checkpoint.save(tmp_path, _state(), META, epoch=1)
    leftover = tmp_path / f".{POINTER}.k1ll3d.tmp"  # write_json_atomic's temp name
    leftover.write_text('{"format": "flaxdig')
    checkpoint.save(tmp_path, _state(), META, epoch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [POINTER, STEPS]


def test_a_step_left_by_a_save_killed_before_its_pointer_moved_is_written_again(tmp_path):
    checkpoint.save(tmp_path, _state(step=1), META, epoch=1)
    before = (tmp_path / POINTER).read_text()
    checkpoint.save(tmp_path, _state(step=2), META, epoch=2)
    (tmp_path / POINTER).write_text(before)  # killed once step 2 was final, before the pointer
    checkpoint.save(tmp_path, _state(step=5, scale=3.0), {"again": True}, epoch=2)
    state, meta = checkpoint.restore(tmp_path, _state())
    assert int(state.step) == 5 and meta == {"again": True}
    np.testing.assert_array_equal(np.asarray(state.params["bias"]), [0.0, 3.0])


def test_the_step_is_renamed_into_place_after_the_test_pause_point(tmp_path, monkeypatch):
    # tests/test_faults.py kills a save at this point: the step is complete under its temporary
    # name, the final name does not exist yet.
    seen = []

    def pause(target, temp):
        files = sorted(p.relative_to(temp).as_posix() for p in temp.rglob("*") if p.is_file())
        seen.append((target, temp.parent, target.exists(), files))

    monkeypatch.setattr(atomic, "pause_before_rename", pause)
    step_dir = checkpoint.save(tmp_path, _state(), META, epoch=3)
    files = sorted(p.relative_to(step_dir).as_posix() for p in step_dir.rglob("*") if p.is_file())
    assert seen == [(step_dir.absolute(), step_dir.absolute().parent, False, files)]


def test_the_arrays_are_a_plain_orbax_tree_of_the_states_names(tmp_path):
    # The on-disk layout is the format: steps written today must read in later versions, and
    # Orbax alone reads them as nested dicts.
    step_dir = checkpoint.save(tmp_path, _state(step=4, scale=2.0), META, epoch=1)
    tree = ocp.StandardCheckpointer().restore(step_dir.absolute() / "state")
    assert sorted(tree) == ["params", "step"] and sorted(tree["params"]) == ["bias", "dense"]
    assert int(tree["step"]) == 4
    np.testing.assert_array_equal(np.asarray(tree["params"]["dense"]["kernel"]), np.full((3, 2), 2))


def test_a_job_of_several_processes_meets_after_the_pointer_names_the_step(tmp_path, monkeypatch):
    # Process 0 writes the pointer; no process may go on before it names the new step.
    met = []
    two = types.SimpleNamespace(**vars(jax))
    two.process_count = lambda: 2
    monkeypatch.setattr(checkpoint, "jax", two)
    monkeypatch.setattr(
        checkpoint.multihost_utils,
        "sync_global_devices",
        lambda name: met.append((name, checkpoint.pointer(tmp_path)["epoch"])),
    )
    checkpoint.save(tmp_path, _state(), META, epoch=3)
    assert met == [("flaxdigits checkpoint 3 committed", 3)]


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


FILES = {"meta/metadata": {"sha256": "0" * 64, "size": 2}}
GOOD = {
    "format": FORMAT,
    "dir": "checkpoints/ckpt_0001",
    "files": FILES,
    "sha256": hashlib.sha256(json.dumps(FILES, sort_keys=True).encode()).hexdigest(),
}


def _files(name="meta/metadata", **entry):
    files = {name: {"sha256": "0" * 64, "size": 2} | entry}
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"files": files, "sha256": digest}


@pytest.mark.parametrize(
    "ptr",
    [
        [GOOD],
        {**GOOD, "format": "flaxdigits.checkpoint.v3"},
        {k: v for k, v in GOOD.items() if k != "format"},
        {**GOOD, "dir": 1},
        {**GOOD, "dir": "../checkpoints/ckpt_0001"},
        {**GOOD, "dir": "checkpoints/ckpt_001"},
        {**GOOD, "dir": "checkpoints/ckpt_0001/state"},
        {**GOOD, "dir": "/checkpoints/ckpt_0001"},
        {**GOOD, "sha256": None},
        {**GOOD, "sha256": "0" * 64},  # not the digest of its files
        {k: v for k, v in GOOD.items() if k != "files"},
        {**GOOD, "files": {}, "sha256": hashlib.sha256(b"{}").hexdigest()},
        {**GOOD, **_files("../../outside")},
        {**GOOD, **_files("/etc/passwd")},
        {**GOOD, **_files("meta\\metadata")},
        {**GOOD, **_files("meta/./metadata")},  # pathlib would read it as meta/metadata
        {**GOOD, **_files("meta//metadata")},
        {**GOOD, **_files("meta/")},
        {**GOOD, **_files("")},  # the step folder itself
        {**GOOD, **_files(sha256="not hex")},
        {**GOOD, **_files(size="2")},
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


def test_the_digest_is_of_the_manifest_whatever_order_it_is_listed_in(tmp_path):
    checkpoint.save(tmp_path, _state(), META, epoch=1)
    files = checkpoint.pointer(tmp_path)["files"]
    shuffled = {name: {"size": e["size"], "sha256": e["sha256"]} for name, e in files.items()}
    shuffled = dict(reversed(shuffled.items()))
    ptr = _rewrite_pointer(tmp_path, files=shuffled)  # the same manifest, the same sha256
    assert checkpoint.pointer(tmp_path) == ptr and checkpoint.read(tmp_path).meta == META


def test_a_checkpoint_of_the_msgpack_format_says_how_to_convert_it(tmp_path):
    old = {
        "format": "flaxdigits.checkpoint.v1",
        "file": "ckpt-0001.msgpack",
        "sha256": "0" * 64,
    }
    (tmp_path / POINTER).write_text(json.dumps(old))
    message = (
        f"{tmp_path / POINTER}: this run was saved in the msgpack format of flaxdigits before "
        "Orbax (flaxdigits.checkpoint.v1); convert it once with "
        f"`flaxdigits migrate {tmp_path}` (sha256-verified; the old files are kept), then use it "
        "as before"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.pointer(tmp_path)


# ---------------------------------------------------------------------------------- reading


def test_a_pointer_to_a_missing_step_is_refused(tmp_path):
    (tmp_path / POINTER).write_text(json.dumps(GOOD))
    step_dir = tmp_path / "checkpoints" / "ckpt_0001"
    message = f"{step_dir}: cannot read checkpoint (directory missing)"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.read(tmp_path)


def test_a_changed_file_quotes_both_digests(tmp_path):
    step_dir = checkpoint.save(tmp_path, _state(), META, epoch=1)
    path = step_dir / "meta" / "metadata"
    want = checkpoint.pointer(tmp_path)["files"]["meta/metadata"]["sha256"]
    path.write_bytes(path.read_bytes() + b" ")
    got = hashlib.sha256(path.read_bytes()).hexdigest()
    message = (
        f"{path}: sha256 {got[:12]}… does not match the pointer's {want[:12]}… "
        "(truncated or modified); retrain, or restore the file"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.read(tmp_path)


def test_a_changed_file_is_refused_before_orbax_reads_it(tmp_path, monkeypatch):
    step_dir = checkpoint.save(tmp_path, _state(), META, epoch=1)
    (step_dir / "state" / "_METADATA").write_text("{}")
    read_by_orbax = []
    monkeypatch.setattr(checkpoint, "_saved_arrays", lambda *a: read_by_orbax.append(a))
    with pytest.raises(CheckpointError, match="does not match the pointer"):
        checkpoint.restore(tmp_path, _state())
    assert not read_by_orbax


def test_hashed_meta_that_is_not_json_is_refused(tmp_path):
    step_dir = checkpoint.save(tmp_path, _state(), META, epoch=1)
    (step_dir / "meta" / "metadata").write_bytes(b"\xc1 not JSON")
    files = checkpoint._manifest(step_dir)  # a pointer that vouches for the bad bytes
    _rewrite_pointer(tmp_path, files=files, sha256=checkpoint._digest(files))
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(step_dir))}: not a flaxdigits"):
        checkpoint.read(tmp_path)


def test_files_differing_from_the_pointer_are_named_three_of_each(tmp_path):
    step_dir = checkpoint.save(tmp_path, _state(), META, epoch=1)
    gone = sorted(checkpoint.pointer(tmp_path)["files"])[:4]
    for name in gone:
        (step_dir / name).unlink()
    for name in ("state/x1", "state/x2", "state/x3", "state/x4"):
        (step_dir / name).write_bytes(b"not ours")
    message = (
        f"{step_dir}: files differ from the pointer's (missing {gone[:3]}, unexpected "
        "['state/x1', 'state/x2', 'state/x3']): truncated or modified; retrain, or restore the "
        "files"
    )
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.read(tmp_path)


def test_a_file_that_cannot_be_read_is_refused_naming_the_step(tmp_path):
    step_dir = checkpoint.save(tmp_path, _state(), META, epoch=1)
    (step_dir / "state" / "link").symlink_to(tmp_path / "nowhere")
    message = f"{step_dir}: cannot read checkpoint ([Errno 2] No such file or directory: "
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}"):
        checkpoint.read(tmp_path)


def _saved_with_hashed_edit(run_dir, name: str, text: str):
    """A saved checkpoint whose file `name` (under the step) was rewritten to `text` and the
    pointer re-hashed to match: damage the hashes cannot catch. Returns the step directory."""
    step_dir = checkpoint.save(run_dir, _state(), META, epoch=1)
    (step_dir / name).write_text(text)
    files = checkpoint._manifest(step_dir)
    _rewrite_pointer(run_dir, files=files, sha256=checkpoint._digest(files))
    return step_dir


def test_hashed_meta_that_is_json_but_not_an_object_is_refused(tmp_path):
    step_dir = _saved_with_hashed_edit(tmp_path, "meta/metadata", "[1, 2]")
    message = f"{step_dir}: not a {FORMAT} checkpoint (meta is not an object)"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.read(tmp_path)


def test_hashed_state_that_orbax_cannot_read_is_refused(tmp_path):
    _saved_with_hashed_edit(tmp_path, "state/_METADATA", "[]")
    with pytest.raises(CheckpointError, match=r"^run7: not a flaxdigits checkpoint \(\w+\)$"):
        checkpoint.fill(checkpoint.read(tmp_path), _state(), "run7")


def test_a_metadata_failure_is_named_by_its_type(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, _state(), META, epoch=1)

    def fails(self, directory):
        raise LookupError(directory)

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "metadata", fails)
    with pytest.raises(
        CheckpointError, match=r"^run7: not a flaxdigits checkpoint \(LookupError\)$"
    ):
        checkpoint.fill(checkpoint.read(tmp_path), _state(), "run7")


def test_read_returns_the_verified_meta_and_step(tmp_path):
    step_dir = checkpoint.save(tmp_path, _state(), META, epoch=1)
    saved = checkpoint.read(tmp_path)
    assert saved.meta == META and saved.step_dir == step_dir
    assert saved.pointer == checkpoint.pointer(tmp_path)


# ---------------------------------------------------------------------------------- filling


def test_fill_names_missing_and_unexpected_paths(tmp_path):
    checkpoint.save(tmp_path, _state(), META, epoch=1)
    template = _state()
    del template.params["bias"]
    template.params["other"] = np.zeros(1, np.float32)
    message = "run7: checkpoint does not fit this model (missing ['params/other'], "
    message += "unexpected ['params/bias'])"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.fill(checkpoint.read(tmp_path), template, "run7")


@pytest.mark.parametrize(
    ("value", "described"),
    [
        (np.zeros(3, np.float32), "(2,) float32, the model needs (3,) float32"),
        (np.zeros(2, np.float64), "(2,) float32, the model needs (2,) float64"),
        (np.zeros((2, 1), np.float32), "(2,) float32, the model needs (2, 1) float32"),
    ],
)
def test_fill_refuses_a_tensor_of_another_shape_or_dtype(tmp_path, value, described):
    checkpoint.save(tmp_path, _state(), META, epoch=1)
    template = _state()
    template.params["bias"] = value
    message = f"checkpoint: params/bias is {described}"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.fill(checkpoint.read(tmp_path), template)


def test_fill_names_three_paths_of_each_of_many(tmp_path):
    state = _state()
    state.params.update({f"old{i}": np.zeros(1, np.float32) for i in range(4)})
    checkpoint.save(tmp_path, state, META, epoch=1)
    template = _state()
    template.params.update({f"new{i}": np.zeros(1, np.float32) for i in range(4)})
    message = "checkpoint: checkpoint does not fit this model (missing ['params/new0', "
    message += "'params/new1', 'params/new2'], unexpected ['params/old0', 'params/old1', "
    message += "'params/old2'])"
    with pytest.raises(CheckpointError, match=f"^{re.escape(message)}$"):
        checkpoint.fill(checkpoint.read(tmp_path), template)


def _one_device_mesh_sharding():
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("rows",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def test_restore_places_every_array_with_the_sharding_given(tmp_path):
    checkpoint.save(tmp_path, _state(), META, epoch=1)
    sharding = _one_device_mesh_sharding()
    state, _ = checkpoint.restore(tmp_path, _state(), sharding)
    assert [leaf.sharding for leaf in jax.tree.leaves(state)] == [sharding] * 3


def test_fill_places_arrays_on_this_processs_first_device_by_default(tmp_path):
    # Not with the sharding they were saved with: that may name devices of another job.
    saved = jax.device_put(_state(), _one_device_mesh_sharding())
    checkpoint.save(tmp_path, saved, META, epoch=1)
    state = checkpoint.fill(checkpoint.read(tmp_path), _state())
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    assert [leaf.sharding for leaf in jax.tree.leaves(state)] == [default] * 3


def test_fill_puts_each_array_in_its_own_place(tmp_path):
    state = State(
        step=np.asarray(3, np.int32),
        params={
            "bias": np.array([4.0, 5.0], np.float32),
            "dense": {"kernel": np.arange(6, dtype=np.float32).reshape(3, 2)},
        },
    )
    checkpoint.save(tmp_path, state, META, epoch=1)
    got = checkpoint.fill(checkpoint.read(tmp_path), _state())
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
