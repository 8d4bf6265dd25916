"""The msgpack checkpoints of flaxdigits before Orbax (flaxdigits.checkpoint.v1), read once to
convert them (runs.migrate_run): sha256-verified before parsing, never written any more.

Layout of such a run dir:
  ckpt-0003.msgpack   {"format", "meta": JSON text, "state": {tree path: array}}
  checkpoint.json     {"format", "file": "ckpt-0003.msgpack", "sha256": ..., "epoch": 3, ...}
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

from flaxdigits.training.checkpoint import OLD_FORMAT, POINTER, CheckpointError, check_fit

_FILE_RE = re.compile(r"^ckpt-(\d{4,})\.msgpack$")
# Key renames for checkpoints written before the CNN kept its conv bias inside nnx.Conv (same
# values, another tree path).
_LEGACY_KEYS = (("['conv_bias']", "['conv']['bias']"),)


def pointer(run_dir: Path) -> dict[str, Any] | None:
    """run_dir's v1 pointer, validated, or None when its pointer is not a v1 one."""
    path = Path(run_dir) / POINTER
    try:
        ptr = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(ptr, dict) or ptr.get("format") != OLD_FORMAT:
        return None
    if not isinstance(ptr.get("file"), str) or not _FILE_RE.match(ptr["file"]):
        raise CheckpointError(f"{path}: not a flaxdigits checkpoint pointer ({OLD_FORMAT})")
    if not isinstance(ptr.get("sha256"), str) or not isinstance(ptr.get("epoch"), int):
        raise CheckpointError(f"{path}: not a flaxdigits checkpoint pointer ({OLD_FORMAT})")
    return ptr


def read(run_dir: Path, ptr: dict[str, Any]) -> dict[str, Any]:
    """The pointed-to v1 checkpoint, sha256-verified before parsing: {"meta", "state"}."""
    path = Path(run_dir) / ptr["file"]
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e})") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != ptr["sha256"]:
        raise CheckpointError(
            f"{path}: sha256 {digest[:12]}… does not match the pointer's {ptr['sha256'][:12]}… "
            "(truncated or modified); restore the file, or retrain"
        )
    try:
        payload = serialization.msgpack_restore(blob)
        meta = json.loads(payload["meta"])
        state = payload["state"]
        ok = payload["format"] == OLD_FORMAT and isinstance(state, dict) and isinstance(meta, dict)
    except Exception as e:  # noqa: BLE001 - any parse failure of hashed bytes is "not ours"
        raise CheckpointError(f"{path}: not a flaxdigits checkpoint ({type(e).__name__})") from None
    if not ok:
        raise CheckpointError(f"{path}: not a {OLD_FORMAT} checkpoint")
    return {"meta": meta, "state": state}


def fill(saved: dict[str, Any], template, where: str):
    """The arrays of a read() checkpoint in template's structure; paths/shapes/dtypes checked."""
    flat = {_current_key(k): v for k, v in saved["state"].items()}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    keys = [jax.tree_util.keystr(path) for path, _ in leaves]
    found = {  # a non-array value (a hashed file can hold any msgpack) fits no model leaf
        k: (v.shape, v.dtype) if isinstance(v, np.ndarray) else (None, type(v).__name__)
        for k, v in flat.items()
    }
    check_fit(found, keys, [want for _, want in leaves], where)
    restored = [jnp.asarray(flat[key]) for key in keys]
    return jax.tree_util.tree_unflatten(treedef, restored)


def _current_key(key: str) -> str:
    for old, new in _LEGACY_KEYS:
        key = key.replace(old, new)
    return key
