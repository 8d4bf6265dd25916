"""Runs saved in the msgpack format before Orbax: refused with what to do, then converted once by
`flaxdigits migrate`, sha256-verified and checked against the model before anything is written."""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np
import pytest
from flax import serialization

from flaxdigits.cli import main as cli
from flaxdigits.runs import load_run, migrate_run
from flaxdigits.training import checkpoint
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.state import init_state


def _write_v1(run, config: TrainConfig, epoch=2, rename=None):
    """A run dir as flaxdigits wrote it before Orbax (the old writer, inlined): its state."""
    _, state = init_state(config)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    flat = {jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves}
    if rename:
        flat = {k.replace(*rename): v for k, v in flat.items()}
    meta = {"config": config.to_dict(), "history": [{"epoch": 1}, {"epoch": 2}], "snapshots": {}}
    payload = {"format": checkpoint.OLD_FORMAT, "meta": json.dumps(meta), "state": flat}
    blob = serialization.msgpack_serialize(payload)
    run.mkdir(parents=True)
    name = f"ckpt-{epoch:04d}.msgpack"
    (run / name).write_bytes(blob)
    sha = hashlib.sha256(blob).hexdigest()
    ptr = {"format": checkpoint.OLD_FORMAT, "file": name, "sha256": sha, "epoch": epoch}
    (run / checkpoint.POINTER).write_text(json.dumps(ptr | {"size": len(blob), "step": 0}))
    (run / "metrics.json").write_text(json.dumps({"checkpoint_sha256": sha, "model": "mlp"}))
    return state


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_an_old_run_is_refused_with_the_command_that_converts_it(tmp_path):
    _write_v1(tmp_path / "run", TrainConfig(model="mlp"))
    with pytest.raises(checkpoint.CheckpointError, match="flaxdigits migrate .*run`"):
        load_run(tmp_path / "run")


def test_migrate_converts_once_and_keeps_the_old_files(tmp_path, capsys):
    run = tmp_path / "run"
    state = _write_v1(run, TrainConfig(model="mlp"))
    old_pointer = (run / checkpoint.POINTER).read_text()
    assert cli.main(["migrate", str(run)]) == 0
    assert "ckpt-0002.msgpack -> checkpoints/ckpt_0002 (epoch 2)" in capsys.readouterr().out
    loaded = load_run(run)
    for a, b in zip(_leaves(state.params), _leaves(nnx_params(loaded)), strict=True):
        np.testing.assert_array_equal(a, b)
    restored, meta = checkpoint.restore(run, state)
    for a, b in zip(_leaves(state), _leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    assert meta["history"] == [{"epoch": 1}, {"epoch": 2}]
    assert json.loads((run / "checkpoint.v1.json").read_text()) == json.loads(old_pointer)
    assert (run / "ckpt-0002.msgpack").exists()
    # metrics.json names the arrays, which migrating leaves as they were, no longer the old file
    metrics = json.loads((run / "metrics.json").read_text())
    assert "checkpoint_sha256" not in metrics
    assert metrics["checkpoint_state_sha256"] == checkpoint.state_digest(state)
    assert checkpoint.pointer(run)["state_sha256"] == checkpoint.state_digest(state)
    with pytest.raises(checkpoint.CheckpointError, match="already in the current format"):
        migrate_run(run)


def nnx_params(run):
    from flax import nnx

    return nnx.split(run.model, nnx.Param)[1]


def test_a_damaged_old_file_is_refused_and_nothing_is_written(tmp_path):
    run = tmp_path / "run"
    _write_v1(run, TrainConfig(model="mlp"))
    path = run / "ckpt-0002.msgpack"
    path.write_bytes(path.read_bytes()[:-10])
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(checkpoint.CheckpointError) as raised:
        migrate_run(run)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ptr = json.loads((run / checkpoint.POINTER).read_text())
    assert str(raised.value) == (
        f"{path}: sha256 {digest[:12]}… does not match the pointer's {ptr['sha256'][:12]}… "
        "(truncated or modified); restore the file, or retrain"
    )
    assert sorted(p.name for p in run.iterdir()) == before


def _rewrite(run, change):
    """Apply change to the run's v1 pointer (a dict) in place."""
    ptr = json.loads((run / checkpoint.POINTER).read_text())
    change(ptr)
    (run / checkpoint.POINTER).write_text(json.dumps(ptr))


def _rehash(run, blob: bytes) -> None:
    """Put blob in place of the run's v1 file, with a pointer that vouches for it: the checks
    after the hash are all that stands between such a file and the converter."""
    ptr = json.loads((run / checkpoint.POINTER).read_text())
    (run / ptr["file"]).write_bytes(blob)
    _rewrite(run, lambda p: p.update(sha256=hashlib.sha256(blob).hexdigest()))


def _refused(run, message: str) -> None:
    """migrate_run refuses the run with exactly message and writes nothing."""
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(checkpoint.CheckpointError) as raised:
        migrate_run(run)
    assert str(raised.value) == message
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


@pytest.mark.parametrize(
    "field",
    [
        {"file": "../ckpt-0002.msgpack"},  # out of the run dir
        {"file": "ckpt-0002.msgpack.bak"},
        {"file": 2},
        {"sha256": None},
        {"epoch": "2"},
        {"epoch": None},
    ],
)
def test_a_pointer_naming_another_file_or_without_a_hash_or_epoch_is_refused(tmp_path, field):
    run = tmp_path / "run"
    _write_v1(run, TrainConfig(model="mlp"))
    (tmp_path / "ckpt-0002.msgpack").write_bytes((run / "ckpt-0002.msgpack").read_bytes())
    _rewrite(run, lambda p: p.update(field))
    pointer = run / checkpoint.POINTER
    _refused(run, f"{pointer}: not a flaxdigits checkpoint pointer ({checkpoint.OLD_FORMAT})")


def test_a_pointer_to_a_missing_file_says_so(tmp_path):
    run = tmp_path / "run"
    _write_v1(run, TrainConfig(model="mlp"))
    (run / "ckpt-0002.msgpack").unlink()
    with pytest.raises(checkpoint.CheckpointError) as raised:
        migrate_run(run)
    assert str(raised.value).startswith(f"{run / 'ckpt-0002.msgpack'}: cannot read checkpoint (")
    assert "No such file" in str(raised.value)


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda p: p | {"format": "flaxdigits.checkpoint.v0"}, None),
        (lambda p: p | {"state": "weights"}, None),  # the right format, no arrays
        (lambda p: p | {"meta": "[1, 2]"}, None),  # the right format, meta no object
        (lambda p: {k: v for k, v in p.items() if k != "meta"}, "KeyError"),
        (lambda p: p | {"meta": "{not json"}, "JSONDecodeError"),
    ],
)
def test_hashed_bytes_that_are_no_v1_checkpoint_are_refused(tmp_path, change, why):
    run = tmp_path / "run"
    _write_v1(run, TrainConfig(model="mlp"))
    path = run / "ckpt-0002.msgpack"
    _rehash(
        run,
        serialization.msgpack_serialize(change(serialization.msgpack_restore(path.read_bytes()))),
    )
    if why is None:
        _refused(run, f"{path}: not a {checkpoint.OLD_FORMAT} checkpoint")
    else:
        _refused(run, f"{path}: not a flaxdigits checkpoint ({why})")


def test_a_non_array_where_the_model_has_an_array_is_refused_by_name(tmp_path):
    run = tmp_path / "run"
    _write_v1(run, TrainConfig(model="mlp"))
    path = run / "ckpt-0002.msgpack"
    payload = serialization.msgpack_restore(path.read_bytes())
    key = next(k for k in payload["state"] if k.startswith(".params") and "kernel" in k)
    want = payload["state"][key]
    payload["state"][key] = "not an array"
    _rehash(run, serialization.msgpack_serialize(payload))
    _refused(run, f"{run}: {key} is None str, the model needs {want.shape} {want.dtype}")


def test_an_old_file_of_another_shape_is_refused(tmp_path):
    run = tmp_path / "run"
    _write_v1(run, TrainConfig(model="mlp"))
    config = json.loads((run / "metrics.json").read_text())
    meta_cnn = {"config": TrainConfig(model="cnn").to_dict(), "history": [], "snapshots": {}}
    payload = serialization.msgpack_restore((run / "ckpt-0002.msgpack").read_bytes())
    _rehash(run, serialization.msgpack_serialize(payload | {"meta": json.dumps(meta_cnn)}))
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this model"):
        migrate_run(run)
    assert config and not (run / checkpoint.STEPS).exists()


def test_a_cnn_checkpoint_from_before_the_standard_conv_layout_still_converts(tmp_path):
    # Until v0.1 the CNN kept its conv bias beside the layer, as params['conv_bias'].
    run = tmp_path / "run"
    state = _write_v1(run, TrainConfig(model="cnn"), rename=("['conv']['bias']", "['conv_bias']"))
    assert "['conv_bias']" in str(
        serialization.msgpack_restore((run / "ckpt-0002.msgpack").read_bytes())["state"].keys()
    )
    migrate_run(run, log=lambda _: None)
    restored, _ = checkpoint.restore(run, state)
    np.testing.assert_array_equal(
        np.asarray(restored.params["conv"]["bias"][...]),
        np.asarray(state.params["conv"]["bias"][...]),
    )
