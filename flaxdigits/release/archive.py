"""The on-disk format of a model release: one deterministic .tar.gz and its SHA256SUMS list.

Standard library only: export/release.py writes releases, release/reader.py reads and verifies
them, and both meet here so the format lives in one place. Reading trusts nothing: the gzip
header must be the exact one `pack` writes, the deflate stream must match the sha256 the header
carries and is inflated under a byte cap, the trailer must hold its CRC32 and length, and the
tar may hold only regular files and directories under one top folder, with plain relative
names, within count and size caps. Links, devices, absolute paths, `..` and duplicate names
are refused, and nothing is written to disk here: the caller gets the members as bytes.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import tarfile
import zlib
from collections.abc import Mapping

SUMS = "SHA256SUMS"  # `sha256sum -c` format: "<64 hex>  <relative path>" per line, sorted
INFO = "release.json"
CARD = "MODEL_CARD.md"
SCHEMA = "flaxdigits.release.v1"
ARCHIVE_SUFFIX = ".tar.gz"

MAX_ARCHIVE_BYTES = 64 * 1024 * 1024  # compressed; a release of both models is ~3 MB
MAX_UNPACKED_BYTES = 256 * 1024 * 1024  # the inflated tar, headers included
MAX_MEMBER_BYTES = 64 * 1024 * 1024  # one file: the predictor's model cap
MAX_MEMBERS = 64
MAX_DEPTH = 4  # path components below the top folder

# gzip header as `pack` writes it (RFC 1952): magic, deflate, FLG.FEXTRA, mtime 0, XFL 2 (best
# compression), OS 255 (unknown), then one extra subfield "FD" holding the sha256 of the deflate
# stream. The CRC32 alone does not cover the stream: deflate can spell the same bytes in several
# ways (a match copying zeros from another distance), so a flipped bit there may inflate to the
# same tar. With the digest every byte of the file is checked: the fixed fields by value, the
# stream by its sha256, the trailer by the CRC32 and length of what it inflates to.
GZIP_HEADER = b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x02\xff" + struct.pack("<H", 36) + b"FD"
GZIP_HEADER += struct.pack("<H", 32)
_DIGEST_END = len(GZIP_HEADER) + 32
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
_SUM_LINE = re.compile(r"([0-9a-f]{64})  (\S+)")


class ReleaseError(ValueError):
    """A release is refused (malformed bytes, a checksum mismatch, a missing file) or cannot be
    made from the models and reports given; nothing was loaded or written. The message says why."""


def check_relative_path(path: str) -> str:
    """path if it is a plain relative path (name/name, no `.`, `..`, `/` prefix or odd
    characters, at most MAX_DEPTH parts), else ReleaseError."""
    parts = path.split("/")
    if not path or len(parts) > MAX_DEPTH or not all(_NAME.fullmatch(p) for p in parts):
        raise ReleaseError(f"unsafe or unexpected path {path[:120]!r}")
    return path


# ------------------------------------------------------------------------------- SHA256SUMS


def format_sums(digests: Mapping[str, str]) -> str:
    """SHA256SUMS text for {relative path: sha256 hex}, sorted by path."""
    return "".join(f"{digests[p]}  {check_relative_path(p)}\n" for p in sorted(digests))


def parse_sums(text: bytes) -> dict[str, str]:
    """{relative path: sha256 hex} from SHA256SUMS bytes; anything but the exact format
    `format_sums` writes (sorted, unique, LF-terminated lines) is refused."""
    try:
        lines = text.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise ReleaseError(f"{SUMS} is not ASCII text") from None
    if lines[-1] != "" or len(lines) < 2:
        raise ReleaseError(f"{SUMS} is empty or does not end in a newline")
    digests: dict[str, str] = {}
    for number, line in enumerate(lines[:-1], 1):
        match = _SUM_LINE.fullmatch(line)
        if match is None:
            raise ReleaseError(f"{SUMS} line {number} is not '<sha256>  <path>'")
        digest, path = match.groups()
        check_relative_path(path)
        if digests and path <= list(digests)[-1]:
            raise ReleaseError(f"{SUMS} line {number}: paths must be unique and sorted")
        digests[path] = digest
    return digests


# ---------------------------------------------------------------------------------- archive


def pack(top: str, files: Mapping[str, bytes]) -> bytes:
    """A deterministic .tar.gz of files {relative path: bytes} under the folder `top`.

    Sorted names, mtime 0, owner root, modes 0644/0755, a fixed gzip header: the same files
    give the same bytes on every machine.
    """
    check_relative_path(top)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        folders = {top} | {
            f"{top}/" + "/".join(p.split("/")[:i])
            for p in files
            for i in range(1, len(check_relative_path(p).split("/")))
        }
        for name in sorted(folders):
            tar.addfile(_info(name, tarfile.DIRTYPE, 0, 0o755))
        for path in sorted(files):
            data = files[path]
            tar.addfile(_info(f"{top}/{path}", tarfile.REGTYPE, len(data), 0o644), io.BytesIO(data))
    raw = buf.getvalue()
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(raw) + deflate.flush()
    trailer = struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)
    return GZIP_HEADER + hashlib.sha256(body).digest() + body + trailer


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def unpack(data: bytes) -> tuple[str, dict[str, bytes]]:
    """(top folder, {relative path: bytes}) of an archive `pack` wrote, checked as it is read.

    Raises:
        ReleaseError: over a cap, a gzip header, CRC, length or trailing byte that is not
            `pack`'s, or a tar member that is not a plain file or folder under one top folder.
    """
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ReleaseError(f"archive is over the {MAX_ARCHIVE_BYTES:,}-byte limit")
    return _untar(_gunzip(data))


def _gunzip(data: bytes) -> bytes:
    """The tar inside: exact header, stream digest, capped inflate, CRC32 and length."""
    if data[: len(GZIP_HEADER)] != GZIP_HEADER or len(data) < _DIGEST_END + 8:
        raise ReleaseError("not a flaxdigits release archive (unexpected gzip header)")
    body, trailer = data[_DIGEST_END:-8], data[-8:]
    if hashlib.sha256(body).digest() != data[len(GZIP_HEADER) : _DIGEST_END]:
        raise ReleaseError("corrupt archive (the compressed data does not match its sha256)")
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        raw = inflate.decompress(body, MAX_UNPACKED_BYTES + 1)
    except zlib.error as e:
        raise ReleaseError(f"corrupt archive (deflate: {e})") from None
    if len(raw) > MAX_UNPACKED_BYTES:
        raise ReleaseError(f"archive unpacks to over {MAX_UNPACKED_BYTES:,} bytes")
    if not inflate.eof or inflate.unused_data:
        raise ReleaseError("corrupt archive (the compressed data ends early or late)")
    crc, size = struct.unpack("<II", trailer)
    if crc != zlib.crc32(raw) or size != len(raw) & 0xFFFFFFFF:
        raise ReleaseError("corrupt archive (CRC32 or length mismatch)")
    return raw


def _untar(raw: bytes) -> tuple[str, dict[str, bytes]]:
    files: dict[str, bytes] = {}
    folders: set[str] = set()
    top = None
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise ReleaseError(f"archive holds over {MAX_MEMBERS} entries")
                head, _, rest = member.name.partition("/")
                top = top or check_relative_path(head)
                if head != top:
                    raise ReleaseError(f"{member.name[:120]!r} is outside {top}/")
                if member.type == tarfile.DIRTYPE:
                    if rest:
                        folders.add(check_relative_path(rest.rstrip("/")))
                    continue
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise ReleaseError(
                        f"{member.name[:120]!r} is a link or special file: only regular files "
                        "are accepted"
                    )
                path = check_relative_path(rest)
                if path in files:
                    raise ReleaseError(f"{member.name[:120]!r} appears twice")
                if member.size > MAX_MEMBER_BYTES:
                    raise ReleaseError(f"{path} is over the {MAX_MEMBER_BYTES:,}-byte limit")
                stream = tar.extractfile(member)
                if stream is None:  # not reached: regular files always have a stream
                    raise ReleaseError(f"{path}: unreadable member")
                files[path] = stream.read(member.size)
    except tarfile.TarError as e:
        raise ReleaseError(f"corrupt archive (tar: {e})") from None
    if top is None or not files:
        raise ReleaseError("empty archive")
    parents = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    clash = sorted((folders | parents) & set(files))
    if clash:
        raise ReleaseError(f"{clash[0]} is both a file and a folder")
    return top, files
