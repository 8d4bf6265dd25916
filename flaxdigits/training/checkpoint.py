"""Checkpoints that cannot run code on load: Orbax step directories, behind a sha256 pointer.

Layout of a run dir:
  checkpoints/ckpt_0003/       an Orbax step: state/ (arrays, tensorstore OCDBT) + meta/ (JSON)
  checkpoint.json              {"format", "dir": "checkpoints/ckpt_0003", "epoch", "step",
                                "files": {path: {"sha256", "size"}}, "sha256": digest of files,
                                "state_sha256": state_digest of the saved arrays}

Every process of a job calls save(): Orbax writes each process's shards into a temporary
directory and renames it once all are written (atomic finalize); only then does process 0 hash
the step's files and atomically replace the pointer, the commit point. Orbax keeps the two newest
steps. A crash at any moment leaves a pointer to a complete step. Loading checks every file's
sha256 against the pointer before Orbax parses anything, then every tree path, shape and dtype
against the model's own state, so a truncated, tampered or foreign checkpoint is refused, never
half-loaded. Nothing is pickled: arrays are tensorstore data, the rest JSON.

Two digests, two jobs. The pointer's sha256 (of the files) verifies the bytes before they are
parsed; it differs between two saves of the same arrays, since Orbax's files hold timestamps and
random ids and the meta holds timings. state_sha256 (of the arrays alone) names what was saved:
two deterministic trainings of one config share it, so it is the provenance that metrics.json
and the exported models carry, and their bytes do not change from one training to the next.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from flaxdigits.core import atomic
from flaxdigits.core.atomic import write_json_atomic

FORMAT = "flaxdigits.checkpoint.v2"
OLD_FORMAT = "flaxdigits.checkpoint.v1"  # msgpack files, before Orbax
POINTER = "checkpoint.json"
STEPS = "checkpoints"  # the Orbax CheckpointManager's directory, inside the run dir
_PREFIX = "ckpt"  # step directories: checkpoints/ckpt_0003
_DIR_RE = re.compile(rf"^{STEPS}/{_PREFIX}_(\d{{4,}})$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_KEEP = 2


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, tampered with or belongs to another job."""


class Saved(NamedTuple):
    """A checkpoint whose files match its pointer: its JSON meta and where its arrays are."""

    meta: dict[str, Any]
    step_dir: Path
    pointer: dict[str, Any]


class _PausableRename(ocp.path.atomicity.AtomicRenameTemporaryPath):
    """Orbax's atomic rename, with flaxdigits.core.atomic's test pause point just before it."""

    async def finalize(self):
        atomic.pause_before_rename(Path(self.get_final()), Path(self.get()))
        await super().finalize()


def exists(run_dir: Path) -> bool:
    """Whether run_dir has a checkpoint pointer."""
    return (Path(run_dir) / POINTER).is_file()


def pointer(run_dir: Path) -> dict[str, Any]:
    """The validated pointer of run_dir's last complete checkpoint."""
    path = Path(run_dir) / POINTER
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir} has no checkpoint ({POINTER} missing): train it first with "
            f"`flaxdigits train --out {run_dir}`"
        )
    try:
        ptr = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint pointer ({e})") from None
    if isinstance(ptr, dict) and ptr.get("format") == OLD_FORMAT:
        raise CheckpointError(
            f"{path}: this run was saved in the msgpack format of flaxdigits before Orbax "
            f"({OLD_FORMAT}); convert it once with `flaxdigits migrate {run_dir}` "
            "(sha256-verified; the old files are kept), then use it as before"
        )
    if not _valid_pointer(ptr):
        raise CheckpointError(f"{path}: not a flaxdigits checkpoint pointer ({FORMAT})")
    return ptr


def _valid_pointer(ptr) -> bool:
    if not isinstance(ptr, dict) or ptr.get("format") != FORMAT:
        return False
    files, step_dir = ptr.get("files"), ptr.get("dir")
    # state_sha256: none in a pointer written before it was recorded, else a sha256
    bad_state = "state_sha256" in ptr and not _SHA_RE.match(str(ptr["state_sha256"]))
    if bad_state or not isinstance(step_dir, str) or not _DIR_RE.match(step_dir):
        return False
    if not isinstance(files, dict) or not files or not isinstance(ptr.get("sha256"), str):
        return False
    for name, entry in files.items():
        # The name as written, not as pathlib normalises it ("a/./b" -> "a/b", "" -> "."):
        # one spelling per file, so a manifest cannot list a file twice or name its folder.
        if "\\" in name or any(part in ("", ".", "..") for part in name.split("/")):
            return False
        if not isinstance(entry, dict) or not _SHA_RE.match(str(entry.get("sha256"))):
            return False
        if not isinstance(entry.get("size"), int):
            return False
    return ptr["sha256"] == _digest(files)


def _digest(files: dict[str, Any]) -> str:
    """The checkpoint's identity: sha256 of its manifest (every file's path, size, sha256)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def state_digest(state) -> str:
    """What a checkpoint holds, independent of how Orbax wrote it: sha256 over every array of
    state in tree-path order, each as a JSON line [path, dtype, shape] then its little-endian
    bytes. A replicated array is read from this process's own copy."""
    digest = hashlib.sha256()
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    for key, leaf in sorted((("/".join(_names(p)), leaf) for p, leaf in flat), key=lambda x: x[0]):
        if isinstance(leaf, jax.Array):
            if not leaf.is_fully_replicated:  # the training state is replicated: a bug if not
                raise ValueError(f"state_digest: {key} is sharded, not replicated")
            leaf = leaf.addressable_data(0)
        array = np.asarray(leaf)
        header = json.dumps([key, array.dtype.name, list(array.shape)])
        digest.update(header.encode() + b"\n")
        native = np.ascontiguousarray(array)
        digest.update((native if sys.byteorder == "little" else native.byteswap()).tobytes())
    return digest.hexdigest()


def state_sha256(saved: Saved, state, where: str = "checkpoint") -> str:
    """state_digest of a state restored from `saved`, checked against the one its pointer
    recorded at save time (a pointer from before it was recorded has none: computed here)."""
    digest = state_digest(state)
    recorded = saved.pointer.get("state_sha256")
    if recorded is not None and recorded != digest:
        raise CheckpointError(
            f"{where}: the restored arrays' digest {digest[:12]}… is not the "
            f"{recorded[:12]}… recorded when they were saved; retrain, or restore the files"
        )
    return digest


def _manifest(step_dir: Path) -> dict[str, dict[str, Any]]:
    """{path relative to step_dir: {"sha256", "size"}} of every file under step_dir."""
    files = {}
    for path in sorted(p for p in step_dir.rglob("*") if p.is_file() or p.is_symlink()):
        with path.open("rb") as f:  # streamed: the optimizer state is megabytes
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = f.tell()
        files[path.relative_to(step_dir).as_posix()] = {"sha256": digest, "size": size}
    return files


def _manager(run_dir: Path) -> ocp.CheckpointManager:
    """The Orbax manager of run_dir/checkpoints: two newest kept, synchronous, atomic rename.

    Every process of a jax.distributed job must create it and call the same methods in the
    same order (Orbax synchronises them with barriers).
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=_KEEP,
        step_prefix=_PREFIX,
        step_format_fixed_length=4,
        cleanup_tmp_directories=True,  # a killed save's temporary directory
        enable_async_checkpointing=False,  # the pointer is written after the step is final
        temporary_path_class=_PausableRename,
    )
    handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
    return ocp.CheckpointManager(
        (Path(run_dir) / STEPS).absolute(), options=options, item_handlers=handlers
    )


def _names(path) -> list[str]:
    """A tree path as plain names: (.params, ['conv'], ['kernel']) -> params, conv, kernel."""
    return jax.tree_util.keystr(path, simple=True, separator="/").split("/")


def _nest(tree, leaf_fn=lambda x: x) -> dict:
    """A pytree as nested dicts of plain names, holding leaf_fn of each leaf."""
    out: dict = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        *parents, name = _names(path)
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = leaf_fn(leaf)
    return out


def _host_int(x) -> int:
    """A replicated scalar as a Python int, read from this process's own copy."""
    if isinstance(x, jax.Array):
        x = x.addressable_data(0)
    return int(np.asarray(x))


def save(run_dir: Path, state, meta: dict[str, Any], epoch: int) -> Path:
    """Write state + JSON-able meta as checkpoint `epoch`, then move the pointer (process 0).

    Every process calls it. Steps at or after `epoch` (a save killed before its pointer moved)
    are deleted first; Orbax then keeps the two newest steps. train() only ever saves epochs
    after the pointer's, so the step the pointer names stands until the new pointer replaces it.
    """
    run_dir = Path(run_dir)
    if jax.process_index() == 0:
        for stale in run_dir.glob(f".{POINTER}.*.tmp"):  # left by a pointer write killed mid-way
            stale.unlink(missing_ok=True)
    manager = _manager(run_dir)
    for stale in [s for s in manager.all_steps() if s >= epoch]:
        manager.delete(stale)
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(_nest(state)), meta=ocp.args.JsonSave(meta)
    )
    manager.save(epoch, args=args, force=True)
    manager.wait_until_finished()
    manager.close()
    step_dir = run_dir / STEPS / f"{_PREFIX}_{epoch:04d}"
    if jax.process_index() == 0:
        files = _manifest(step_dir)
        ptr = {
            "format": FORMAT,
            "dir": step_dir.relative_to(run_dir).as_posix(),
            "epoch": epoch,
            "step": _host_int(state.step),
            "sha256": _digest(files),
            "state_sha256": state_digest(state),
            "size": sum(f["size"] for f in files.values()),
            "files": files,
        }
        write_json_atomic(run_dir / POINTER, ptr)
    if jax.process_count() > 1:  # the pointer names this step on every process from here on
        multihost_utils.sync_global_devices(f"flaxdigits checkpoint {epoch} committed")
    return step_dir


def read(run_dir: Path) -> Saved:
    """The pointed-to checkpoint, every file sha256-verified before Orbax parses any: its meta."""
    run_dir = Path(run_dir)
    ptr = pointer(run_dir)
    step_dir = run_dir / ptr["dir"]
    if not step_dir.is_dir():
        raise CheckpointError(f"{step_dir}: cannot read checkpoint (directory missing)")
    try:
        got = _manifest(step_dir)
    except OSError as e:
        raise CheckpointError(f"{step_dir}: cannot read checkpoint ({e})") from None
    want = ptr["files"]
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"{step_dir}: files differ from the pointer's (missing {missing[:3]}, unexpected "
            f"{extra[:3]}): truncated or modified; retrain, or restore the files"
        )
    for name, entry in want.items():
        if got[name]["sha256"] != entry["sha256"]:
            raise CheckpointError(
                f"{step_dir / name}: sha256 {got[name]['sha256'][:12]}… does not match the "
                f"pointer's {entry['sha256'][:12]}… (truncated or modified); retrain, or "
                "restore the file"
            )
    try:
        meta = json.loads((step_dir / "meta" / "metadata").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{step_dir}: not a flaxdigits checkpoint ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{step_dir}: not a {FORMAT} checkpoint (meta is not an object)")
    return Saved(meta=meta, step_dir=step_dir, pointer=ptr)


def restore(run_dir: Path, template, sharding: jax.sharding.Sharding | None = None):
    """Load run_dir's checkpoint into the structure of template. Returns (state, meta)."""
    saved = read(run_dir)
    return fill(saved, template, str(run_dir), sharding), saved.meta


def fill(saved: Saved, template, where: str = "checkpoint", sharding=None):
    """The arrays of a read() checkpoint in template's structure; paths/shapes/dtypes checked.

    template's leaves may be arrays or jax.ShapeDtypeStruct. The arrays are placed with
    `sharding` (every process of a job passes the same one), by default on this process's first
    device.
    """
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    keys = ["/".join(_names(path)) for path, _ in leaves]
    check_fit(_saved_arrays(saved, where), keys, [want for _, want in leaves], where)
    target = _nest(template, lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding))
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        restored = checkpointer.restore(
            saved.step_dir.absolute() / "state", ocp.args.StandardRestore(target)
        )
    flat = {
        "/".join(_names(p)): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(restored)[0]
    }
    return jax.tree_util.tree_unflatten(treedef, [flat[k] for k in keys])


def check_fit(found: dict[str, tuple], keys: list[str], wants: list, where: str) -> None:
    """Refuse a saved checkpoint that does not fit the model: found {path: (shape, dtype)} must
    hold exactly `keys`, each with the shape and dtype of its `wants` leaf (array or abstract)."""
    missing = [k for k in keys if k not in found]
    extra = sorted(set(found) - set(keys))
    if missing or extra:
        raise CheckpointError(
            f"{where}: checkpoint does not fit this model (missing {missing[:3]}, "
            f"unexpected {extra[:3]})"
        )
    for key, want in zip(keys, wants, strict=True):
        got_shape, got_dtype = found[key]
        want_shape, want_dtype = tuple(want.shape), np.dtype(want.dtype)
        if got_shape != want_shape or got_dtype != want_dtype:
            raise CheckpointError(
                f"{where}: {key} is {got_shape} {got_dtype}, the model needs "
                f"{want_shape} {want_dtype}"
            )


def _saved_arrays(saved: Saved, where: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{path: (shape, dtype)} of the arrays in a verified step, from Orbax's metadata."""
    try:
        tree = ocp.StandardCheckpointHandler().metadata(saved.step_dir.absolute() / "state")
        flat = jax.tree_util.tree_flatten_with_path(tree.tree)[0]
        return {"/".join(_names(p)): (tuple(m.shape), np.dtype(m.dtype)) for p, m in flat}
    except Exception as e:  # noqa: BLE001 - any metadata failure of hashed files is "not ours"
        raise CheckpointError(
            f"{where}: not a flaxdigits checkpoint ({type(e).__name__})"
        ) from None
