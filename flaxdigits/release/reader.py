"""Read a model release (archive or unpacked folder) and verify every checksum before use.

`flaxdigits serve` and `flaxdigits predict` take a release wherever they take models. Nothing in
it is parsed (no JSON, no ONNX) until every file's sha256 matches SHA256SUMS and the files
present are exactly the files listed; one mismatch refuses the whole release with one line. The
verified bytes are then written to a private temporary folder (mode 0700, files created
exclusively, no links followed) and the models are loaded from there, so a file changed on disk
after the check is never the one that is read. Standard library, plus the serve side's own
dependencies through its callers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flaxdigits.core import contract
from flaxdigits.core.files import ReadError, read_capped
from flaxdigits.release import archive
from flaxdigits.release.archive import ReleaseError

MAX_INFO_BYTES = 1024 * 1024
VARIANT_SUFFIXES = contract.VARIANT_SUFFIXES  # a model's files in models/
_NAMED = re.compile(r"flaxdigits-models-.+-([0-9a-f]{8})")


@dataclass(frozen=True)
class Release:
    """A verified release: its name, release.json, and every file's bytes by relative path."""

    name: str
    info: dict
    files: dict[str, bytes]
    sha256: str  # of the archive file; of SHA256SUMS for an unpacked folder


def is_release(path) -> bool:
    """A .tar.gz file, or a folder holding SHA256SUMS: what serve and predict read as a release."""
    path = Path(path)
    if path.name.endswith(archive.ARCHIVE_SUFFIX):
        return True
    return path.is_dir() and (path / archive.SUMS).exists()


def read_release(path) -> Release:
    """Read a release archive or unpacked release folder and verify it.

    Args:
        path: dist/flaxdigits-models-*.tar.gz, or the folder it unpacks to.

    Returns:
        The verified Release.

    Raises:
        ReleaseError: unreadable, malformed, a checksum mismatch, a missing or unlisted file, or
            an unusable release.json; the message names the file.
    """
    path = Path(path)
    try:
        if path.is_dir():
            name, files = path.name, _read_folder(path)
            digest = hashlib.sha256(files.get(archive.SUMS, b"")).hexdigest()
        else:
            data = read_capped(path, archive.MAX_ARCHIVE_BYTES, "release archive")
            name, files = archive.unpack(data)
            digest = hashlib.sha256(data).hexdigest()
        _verify(files)
        _check_name(name, files[archive.SUMS])
    except (ReadError, ReleaseError) as e:
        raise ReleaseError(f"{path}: release refused, nothing loaded: {e}") from None
    try:
        info = _info(files)
    except ReleaseError as e:
        raise ReleaseError(f"{path}: {e}") from None
    return Release(name=name, info=info, files=files, sha256=digest)


def _read_folder(folder: Path) -> dict[str, bytes]:
    """Every file under folder, as the archive would give them: regular files only, capped."""
    files: dict[str, bytes] = {}
    total = 0
    for root, dirs, names in os.walk(folder, followlinks=False):
        for entry in sorted(dirs):
            if (Path(root) / entry).is_symlink():
                raise ReleaseError(f"{entry} is a link: only regular files are accepted")
        for entry in sorted(names):
            full = Path(root) / entry
            rel = full.relative_to(folder).as_posix()
            archive.check_relative_path(rel)
            mode = full.lstat().st_mode
            if not stat.S_ISREG(mode):
                raise ReleaseError(f"{rel} is a link or special file: only regular files")
            if len(files) >= archive.MAX_MEMBERS:
                raise ReleaseError(f"over {archive.MAX_MEMBERS} files")
            files[rel] = read_capped(full, archive.MAX_MEMBER_BYTES, "file")
            total += len(files[rel])
            if total > archive.MAX_UNPACKED_BYTES:
                raise ReleaseError(f"over {archive.MAX_UNPACKED_BYTES:,} bytes in all")
    return files


def _verify(files: dict[str, bytes]) -> None:
    """Every file but SHA256SUMS is listed in it with its sha256, and nothing else is listed."""
    sums = files.get(archive.SUMS)
    if sums is None:
        raise ReleaseError(f"no {archive.SUMS}: not a flaxdigits release")
    listed = archive.parse_sums(sums)
    present = set(files) - {archive.SUMS}
    missing = sorted(set(listed) - present)
    if missing:
        raise ReleaseError(f"{missing[0]} is listed in {archive.SUMS} but missing")
    unlisted = sorted(present - set(listed))
    if unlisted:
        raise ReleaseError(f"{unlisted[0]} is not listed in {archive.SUMS}")
    for rel in sorted(listed):
        if hashlib.sha256(files[rel]).hexdigest() != listed[rel]:
            raise ReleaseError(
                f"{rel}: sha256 does not match {archive.SUMS}: the file was modified or "
                "corrupted; download or rebuild the release"
            )


def _check_name(name: str, sums: bytes) -> None:
    """A release named flaxdigits-models-VERSION-DIGEST must hold the SHA256SUMS whose sha256
    starts with DIGEST: the name is bound to the content (a renamed folder is not checked)."""
    match = _NAMED.fullmatch(name)
    if match and hashlib.sha256(sums).hexdigest()[:8] != match.group(1):
        raise ReleaseError(
            f"the name's digest {match.group(1)} is not that of its {archive.SUMS}: "
            "the files were changed together or the release was renamed"
        )


def _info(files: dict[str, bytes]) -> dict:
    """release.json, checked: schema, and every model file it names present (the gate's too,
    when it names a gate: its files are handed back with the others, under models/)."""
    raw = files.get(archive.INFO)
    if raw is None or len(raw) > MAX_INFO_BYTES:
        raise ReleaseError(f"no usable {archive.INFO}")
    try:
        info = json.loads(raw)
    except (ValueError, RecursionError):
        raise ReleaseError(f"{archive.INFO} is not JSON") from None
    if not isinstance(info, dict) or info.get("schema") != archive.SCHEMA:
        raise ReleaseError(
            f"{archive.INFO} is not a {archive.SCHEMA} index: this flaxdigits "
            "cannot read this release; upgrade flaxdigits"
        )
    models = info.get("models") or {}
    named = [
        (name, models.get(name) if isinstance(models, dict) else None)
        for name in contract.MODEL_NAMES
    ]
    if "gate" in info:  # a release with the gate (contract.GATE_NAME) names its files here
        named.append((contract.GATE_NAME, info["gate"]))
    for name, model in named:
        for suffix in (".json", *_suffixes(model, name)):
            if f"models/{name}{suffix}" not in files:
                raise ReleaseError(f"release has no models/{name}{suffix}")
    return info


def _suffixes(model, name: str) -> list[str]:
    """The files release.json's entry of a model says it ships: float and int8, or the int8
    alone."""
    shipped = model.get("files") if isinstance(model, dict) else None
    if not isinstance(shipped, dict) or not shipped or set(shipped) - set(VARIANT_SUFFIXES):
        raise ReleaseError(f"{archive.INFO} does not say which files of {name} it holds")
    return [VARIANT_SUFFIXES[v] for v in shipped]


@contextlib.contextmanager
def unpacked(path) -> Iterator[Path]:
    """A verified release written to a private temporary folder; yields that folder (models
    in models/), removed on exit."""
    release = read_release(path)
    root = Path(tempfile.mkdtemp(prefix="flaxdigits-release-"))  # mode 0700
    try:
        for rel, data in release.files.items():
            target = root / rel
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            fd = os.open(target, flags, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def models_dir(path) -> Iterator[Path]:
    """The models folder of a release (verified, as `unpacked`), or path itself when it is a
    plain models folder."""
    if not is_release(path):
        yield Path(path)
        return
    with unpacked(path) as root:
        yield root / "models"


DEFAULT_MODEL_FILES = ("cnn.onnx", "cnn.int8.onnx")  # the float CNN, else (a small release) int8


@contextlib.contextmanager
def model_file(path, file: str | None = None) -> Iterator[Path]:
    """One model file: `file` (e.g. cnn.onnx, mlp.int8.onnx) of a release, verified, or path
    itself when it is not a release. No file: cnn.onnx, or cnn.int8.onnx in a release that
    ships the int8 files only."""
    if not is_release(path):
        yield Path(path)
        return
    with unpacked(path) as root:
        if file is None:
            present = [f for f in DEFAULT_MODEL_FILES if (root / "models" / f).is_file()]
            file = present[0] if present else DEFAULT_MODEL_FILES[0]
        target = root / "models" / file
        if "/" in file or not target.is_file():
            names = sorted(p.name for p in (root / "models").glob("*.onnx"))
            raise ReleaseError(f"{path}: no model file {file!r} in the release; one of {names}")
        yield target
