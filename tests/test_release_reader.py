"""Model releases as serve/predict read them: each is verified before any model is read (a
flipped byte anywhere, a missing, extra or linked file, a name that is not its checksums'), and
hostile archives are refused before anything is written. What `flaxdigits release` packs:
tests/test_release.py."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import tracemalloc
import zlib

import pytest

from flaxdigits.cli.main import main
from flaxdigits.core import contract
from flaxdigits.release import archive as release_archive
from flaxdigits.release import reader as release
from flaxdigits.release.reader import ReleaseError, read_release
from flaxdigits.serve.page.handlers import load_predictors
from tests.support.toy_onnx import no_parsers


def _gz(raw: bytes) -> bytes:
    """A tar's bytes gzipped with the exact header, digest and trailer release archives use."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return _framed(deflate.compress(raw) + deflate.flush(), raw)


def _framed(body: bytes, raw: bytes) -> bytes:
    trailer = struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)
    return release_archive.GZIP_HEADER + hashlib.sha256(body).digest() + body + trailer


# ---------------------------------------------------------------------------- verification


def test_serve_loads_both_models_from_a_release_and_removes_its_private_copy(archive, folder):
    for source in (archive, folder):
        with release.models_dir(source) as models:
            predictors = load_predictors(models)
            assert oct(models.parent.stat().st_mode & 0o777) == "0o700"
        assert not models.exists()
        assert {n: p.metadata[contract.META_TEST_ACCURACY] for n, p in predictors.items()} == {
            "mlp": "0.9123",
            "cnn": "0.9876",
        }


def test_predict_reads_any_model_of_a_release(archive, folder, tmp_path, capsys):
    from PIL import Image

    from tests.support.drawings import draw_digit

    image = tmp_path / "seven.png"
    Image.fromarray(draw_digit()).save(image)
    for source, file, digit in ((archive, "mlp.int8.onnx", 3), (folder, "cnn.onnx", 8)):
        args = ["predict", "--model", str(source), "--release-file", file, "--json", str(image)]
        assert main(args) == 0
        assert json.loads(capsys.readouterr().out)["digit"] == digit
    assert main(["predict", "--model", str(archive), "--release-file", "x.onnx", str(image)]) == 2
    assert "no model file 'x.onnx'" in capsys.readouterr().err


def test_verify_prints_one_line_with_the_sha256_to_compare_with_a_published_one(archive, capsys):
    assert main(["verify", str(archive)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "9 files" in out and "every sha256 matches" in out
    assert out.rstrip().endswith(hashlib.sha256(archive.read_bytes()).hexdigest())


def test_a_release_whose_name_does_not_match_its_checksums_is_refused(folder, tmp_path):
    other = tmp_path / "flaxdigits-models-0.1.0-00000000"
    folder.rename(other)
    with pytest.raises(ReleaseError, match="name's digest 00000000 is not that of its"):
        read_release(other)
    renamed = tmp_path / "my-models"  # a name without a digest is not checked
    other.rename(renamed)
    assert read_release(renamed).name == "my-models"


def test_a_flipped_byte_anywhere_in_the_archive_refuses_it_and_loads_nothing(archive, tmp_path):
    data = archive.read_bytes()
    bad = tmp_path / archive.name
    with no_parsers():
        for i in range(len(data)):
            bad.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :])
            with pytest.raises(ReleaseError) as caught:
                read_release(bad)
            assert "\n" not in str(caught.value) and "nothing loaded" in str(caught.value), i


def test_a_flipped_byte_in_any_unpacked_file_refuses_the_release(folder, capsys, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"never read")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        original = path.read_bytes()
        for i in sorted({0, len(original) // 2, len(original) - 1}):
            path.write_bytes(original[:i] + bytes([original[i] ^ 0x80]) + original[i + 1 :])
            with no_parsers():
                status = main(["predict", "--model", str(folder), "--json", str(image)])
                out, err = capsys.readouterr()
                assert status == 2 and out == "" and err.count("\n") == 1, (path, i, err)
                assert "release refused, nothing loaded" in err
                with pytest.raises(ReleaseError):
                    release.models_dir(folder).__enter__()
        path.write_bytes(original)
    assert main(["verify", str(folder)]) == 0


def test_a_missing_or_extra_file_refuses_the_release(folder):
    (folder / "models" / "notes.txt").write_text("hi")
    with pytest.raises(ReleaseError, match="models/notes.txt is not listed"):
        read_release(folder)
    (folder / "models" / "notes.txt").unlink()
    (folder / "MODEL_CARD.md").unlink()
    with pytest.raises(ReleaseError, match="MODEL_CARD.md is listed .* but missing"):
        read_release(folder)


def test_a_link_in_an_unpacked_release_is_refused(folder, tmp_path):
    target = tmp_path / "elsewhere.onnx"
    target.write_bytes((folder / "models" / "cnn.onnx").read_bytes())
    (folder / "models" / "cnn.onnx").unlink()
    (folder / "models" / "cnn.onnx").symlink_to(target)
    with pytest.raises(ReleaseError, match="link or special file"):
        read_release(folder)


# ------------------------------------------------------------------------- hostile archives


def _tar(members) -> bytes:
    """A tar of (TarInfo, bytes | None) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name, kind=tarfile.REGTYPE, data=b"x", **fields):
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data if kind == tarfile.REGTYPE else None


HOSTILE = {
    "parent": ([_member("top/../evil")], "unsafe or unexpected path"),
    "absolute": ([_member("/etc/evil")], "unsafe or unexpected path"),
    "outside-top": ([_member("top/a"), _member("other/b")], "outside top/"),
    "symlink": ([_member("top/a", tarfile.SYMTYPE, linkname="/etc/passwd")], "link or special"),
    "hardlink": ([_member("top/a"), _member("top/b", tarfile.LNKTYPE, linkname="top/a")], "link"),
    "device": ([_member("top/dev", tarfile.CHRTYPE)], "link or special file"),
    "fifo": ([_member("top/fifo", tarfile.FIFOTYPE)], "link or special file"),
    "duplicate": ([_member("top/a"), _member("top/a", data=b"y")], "appears twice"),
    "backslash": ([_member("top/..\\evil")], "unsafe or unexpected path"),
    "hidden": ([_member("top/.bashrc")], "unsafe or unexpected path"),
    "too-deep": ([_member("top/a/b/c/d/e")], "unsafe or unexpected path"),
    "too-many": ([_member(f"top/f{i}") for i in range(release_archive.MAX_MEMBERS + 1)], "over 64"),
    "file-and-folder": ([_member("top/a"), _member("top/a/b")], "both a file and a folder"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_before_anything_is_written(case, tmp_path, monkeypatch):
    members, message = HOSTILE[case]
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(_gz(_tar(members)))
    monkeypatch.setattr(release.tempfile, "mkdtemp", pytest.fail)  # nothing reaches the disk
    with pytest.raises(ReleaseError, match=message):
        with release.models_dir(path):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]


def test_a_member_claiming_a_huge_size_is_refused_before_it_is_read(tmp_path):
    raw = bytearray(_tar([_member("top/a", data=b"x" * 10)]))
    info = tarfile.TarInfo("top/a")
    info.size = release_archive.MAX_MEMBER_BYTES + 1
    header = info.tobuf(tarfile.GNU_FORMAT)
    raw[: len(header)] = header  # a header claiming 64 MiB + 1 over 10 bytes of data
    path = tmp_path / "huge.tar.gz"
    path.write_bytes(_gz(bytes(raw) + bytes(release_archive.MAX_MEMBER_BYTES + 1024)))
    with pytest.raises(ReleaseError, match="over the 67,108,864-byte limit"):
        read_release(path)


def test_a_decompression_bomb_is_stopped_at_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(release_archive, "MAX_UNPACKED_BYTES", 4 * 1024 * 1024)  # 256 MiB: slow
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(bytes(64 * 1024 * 1024)) + deflate.flush()  # 64 MiB of zeros
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(_framed(body, b""))
    assert path.stat().st_size < 128 * 1024
    with pytest.raises(ReleaseError, match="unpacks to over 4,194,304 bytes"):
        read_release(path)
    data = path.read_bytes()
    tracemalloc.start()  # (read_capped's buffer is its cap, allocated and never touched: not here)
    try:
        with pytest.raises(release_archive.ReleaseError):
            release_archive.unpack(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024  # inflated up to the cap, never the whole 64 MiB


def test_trailing_bytes_and_an_oversized_archive_are_refused(archive, tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(archive.read_bytes() + b"\0")
    with pytest.raises(ReleaseError, match="does not match its sha256"):
        read_release(path)
    with open(path, "wb") as f:
        f.truncate(release_archive.MAX_ARCHIVE_BYTES + 1)
    with pytest.raises(ReleaseError, match="over the 67,108,864-byte limit"):
        read_release(path)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"%s  b\n%s  a\n" % (b"0" * 64, b"0" * 64),  # unsorted
        b"%s  a\n%s  a\n" % (b"0" * 64, b"0" * 64),  # duplicate
        b"%s  a\r\n" % (b"0" * 64),  # CRLF
        b"%s  a" % (b"0" * 64),  # no final newline
        b"%s *a\n" % (b"0" * 64),  # binary-mode marker
        b"%s  ../a\n" % (b"0" * 64),
        b"%s  a\n" % (b"A" * 64),  # upper-case hex
    ],
)
def test_only_the_exact_checksum_format_is_read(text):
    with pytest.raises(release_archive.ReleaseError):
        release_archive.parse_sums(text)
