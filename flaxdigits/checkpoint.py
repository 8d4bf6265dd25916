"""Checkpoints that cannot run code on load: msgpack of plain arrays + JSON, behind a hash pointer.

Layout of a run dir:
  ckpt-0003.msgpack   {"format", "meta": JSON text, "state": {tree path: array}}
  checkpoint.json     {"file": "ckpt-0003.msgpack", "sha256": ..., "epoch": 3, ...}

Each epoch writes a new checkpoint file atomically, then atomically replaces the pointer, then
prunes all but the two newest files: a crash at any moment leaves a pointer to a complete file.
Loading verifies the pointer's sha256 before parsing, then every path, shape and dtype against the
model's own state, so a truncated, tampered or foreign file is refused, never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from flaxdigits.atomic import write_bytes_atomic, write_json_atomic

FORMAT = "flaxdigits.checkpoint.v1"
POINTER = "checkpoint.json"
_FILE_RE = re.compile(r"^ckpt-(\d{4,})\.msgpack$")
_KEEP = 2
# Key renames for checkpoints written before the CNN kept its conv bias inside nnx.Conv (same
# values, another tree path): such runs still load and resume.
_LEGACY_KEYS = (("['conv_bias']", "['conv']['bias']"),)


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, tampered with or belongs to another job."""


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
    if (
        not isinstance(ptr, dict)
        or ptr.get("format") != FORMAT
        or not isinstance(ptr.get("file"), str)
        or not _FILE_RE.match(ptr["file"])
        or not isinstance(ptr.get("sha256"), str)
    ):
        raise CheckpointError(f"{path}: not a flaxdigits checkpoint pointer ({FORMAT})")
    return ptr


def _flatten(tree) -> dict[str, np.ndarray]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save(run_dir: Path, state, meta: dict[str, Any], epoch: int) -> Path:
    """Write state + JSON-able meta as checkpoint `epoch`, move the pointer, prune old files."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(".*.tmp"):  # left by a write that was killed mid-way
        stale.unlink(missing_ok=True)
    name = f"ckpt-{epoch:04d}.msgpack"
    payload = {"format": FORMAT, "meta": json.dumps(meta), "state": _flatten(state)}
    blob = serialization.msgpack_serialize(payload)
    write_bytes_atomic(run_dir / name, blob)
    ptr = {
        "format": FORMAT,
        "file": name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
        "epoch": epoch,
        "step": int(np.asarray(state.step)),
    }
    write_json_atomic(run_dir / POINTER, ptr)
    files = sorted(p for p in run_dir.iterdir() if _FILE_RE.match(p.name))
    for old in files[:-_KEEP]:
        if old.name != name:
            old.unlink(missing_ok=True)
    return run_dir / name


def read(run_dir: Path) -> dict[str, Any]:
    """The pointed-to checkpoint, sha256-verified before parsing: {"meta": dict, "state": dict}."""
    run_dir = Path(run_dir)
    ptr = pointer(run_dir)
    path = run_dir / ptr["file"]
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e})") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != ptr["sha256"]:
        raise CheckpointError(
            f"{path}: sha256 {digest[:12]}… does not match the pointer's {ptr['sha256'][:12]}… "
            "(truncated or modified); retrain, or restore the file"
        )
    try:
        payload = serialization.msgpack_restore(blob)
        meta = json.loads(payload["meta"])
        state = payload["state"]
        ok = payload["format"] == FORMAT and isinstance(state, dict) and isinstance(meta, dict)
    except Exception as e:  # noqa: BLE001 - any parse failure of hashed bytes is "not ours"
        raise CheckpointError(f"{path}: not a flaxdigits checkpoint ({type(e).__name__})") from None
    if not ok:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    return {"meta": meta, "state": state}


def restore(run_dir: Path, template):
    """Load run_dir's checkpoint into the structure of template. Returns (state, meta)."""
    saved = read(run_dir)
    return fill(saved, template, str(run_dir)), saved["meta"]


def _current_key(key: str) -> str:
    for old, new in _LEGACY_KEYS:
        key = key.replace(old, new)
    return key


def fill(saved: dict[str, Any], template, where: str = "checkpoint"):
    """The arrays of a read() checkpoint in template's structure; paths/shapes/dtypes checked."""
    flat = {_current_key(k): v for k, v in saved["state"].items()}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    keys = [jax.tree_util.keystr(path) for path, _ in leaves]
    missing = [k for k in keys if k not in flat]
    extra = sorted(set(flat) - set(keys))
    if missing or extra:
        raise CheckpointError(
            f"{where}: checkpoint does not fit this model (missing {missing[:3]}, "
            f"unexpected {extra[:3]})"
        )
    restored = []
    for key, (_, want) in zip(keys, leaves, strict=True):
        got = flat[key]
        want_shape, want_dtype = tuple(want.shape), np.dtype(want.dtype)  # arrays or abstract
        if not isinstance(got, np.ndarray) or got.shape != want_shape or got.dtype != want_dtype:
            shape = getattr(got, "shape", None)
            dtype = getattr(got, "dtype", type(got).__name__)
            raise CheckpointError(
                f"{where}: {key} is {shape} {dtype}, the model needs {want_shape} {want_dtype}"
            )
        restored.append(jnp.asarray(got))
    return jax.tree_util.tree_unflatten(treedef, restored)
