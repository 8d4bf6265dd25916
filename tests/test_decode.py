"""Decoding: accepted formats, first frames, EXIF, byte and pixel caps, bombs, unreadable files,
Pillow's process-wide limits, and hostile bytes (the corpus and mutations of valid files)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from flaxdigits.serve.runtime.decode import ImageInputError, load_image_file
from flaxdigits.serve.runtime.preprocess import preprocess
from tests.programs import command
from tests.support.drawings import save
from tests.support.strategies import CORPUS, INDEX, fuzz, mutated_files, outcome


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_accepted_formats_load_and_predict_the_same_digit(fmt, ink, reference, tmp_path):
    path = save(Image.fromarray(ink).convert("RGB"), tmp_path / f"d.{fmt.lower()}", format=fmt)
    img = load_image_file(path)
    assert isinstance(img, Image.Image) and img.size == ink.shape[::-1]
    assert np.abs(preprocess(img).image - reference).mean() < 0.02  # JPEG/WebP are lossy


def test_gif_uses_the_first_frame(ink, reference, tmp_path):
    frames = [Image.fromarray(ink).convert("P"), Image.new("P", ink.shape[::-1], 0)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    np.testing.assert_allclose(preprocess(load_image_file(path)).image, reference, atol=1e-6)


def test_exif_orientation_is_applied(ink, tmp_path):
    # Non-square, so a missed turn changes the size; compared pixel by pixel, so a wrong turn
    # (the other direction, a flip) is caught too.
    upright = np.ascontiguousarray(ink[:, 50:250])  # 200 wide, 300 tall; the whole '7'
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # 300 wide, 200 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": undoes ROTATE_90 (counter-clockwise)
    path = save(stored, tmp_path / "rot.jpg", exif=exif, quality=95)
    loaded = load_image_file(path)
    assert loaded.size == (200, 300)
    diff = np.abs(np.asarray(loaded.convert("L"), np.float32) - upright.astype(np.float32))
    assert diff.mean() < 1.0  # JPEG at quality 95: well under one grey level on average


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"hello, not an image", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image|cannot decode"),
    ],
)
def test_unreadable_files_raise_image_input_error(content, match, tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageInputError, match=match):
        load_image_file(path)


def test_truncated_png_is_refused(ink, tmp_path):
    buf = io.BytesIO()
    Image.fromarray(ink).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageInputError, match="truncated|cannot decode"):
        preprocess(load_image_file(path))


def test_unlisted_format_is_refused(ink, tmp_path):
    path = save(Image.fromarray(ink), tmp_path / "d.tiff", format="TIFF")
    with pytest.raises(ImageInputError, match="PNG, JPEG, WebP, GIF or BMP"):
        load_image_file(path)


def test_byte_and_pixel_caps(ink, tmp_path):
    path = save(Image.fromarray(ink), tmp_path / "d.png")
    with pytest.raises(ImageInputError, match="byte limit"):
        load_image_file(path, max_bytes=100)
    with pytest.raises(ImageInputError, match="pixel limit"):
        load_image_file(path, max_pixels=299 * 300)
    assert load_image_file(path, max_pixels=300 * 300).size == (300, 300)


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    # 5000 x 5000 1-bit pixels compress to a few kB; decoding would need 25 MB as "L".
    path = save(Image.new("1", (5000, 5000), 1), tmp_path / "bomb.png", optimize=True)
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageInputError, match="pixel limit"):
        load_image_file(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's own guard, also caught
    with pytest.raises(ImageInputError, match="decompression bomb"):
        load_image_file(path, max_pixels=10**9)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageInputError, match="no such file"):
        load_image_file(tmp_path / "nope.png")
    with pytest.raises(ImageInputError, match="is a directory"):
        load_image_file(tmp_path)


# ------------------------------------------------------------------------------- hostile bytes

MAGIC = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    b"RIFF\x00\x10\x00\x00WEBPVP8L",
    b"BM",
]


@fuzz(300)
@given(st.sampled_from(MAGIC), st.binary(max_size=2048))
def test_random_bytes_end_valid_or_refused(magic, tail):
    outcome(magic + tail)


@fuzz(300)
@given(mutated_files())
def test_truncated_and_corrupt_files_end_valid_or_refused(data):
    outcome(data)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")  # "Corrupt EXIF data"
@fuzz(150)
@given(
    st.sampled_from([b"II*\x00\x08\x00\x00\x00", b"MM\x00*\x00\x00\x00\x08", b""]),
    st.binary(max_size=300),
)
def test_any_exif_block_ends_valid_or_refused(head, body):
    exif = head + body
    png = (CORPUS / "digit.png").read_bytes()
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    outcome(png[:33] + chunk + png[33:])  # after IHDR: exif_transpose reads it


def test_corpus_is_what_make_corpus_builds(tmp_path):
    script = CORPUS / "make_corpus.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, timeout=120)
    built = json.loads((tmp_path / "index.json").read_text())
    committed = json.loads((CORPUS / "index.json").read_text())
    strip = [{k: v for k, v in e.items() if k not in ("bytes", "sha256")} for e in built["cases"]]
    assert strip == [{k: v for k, v in e.items() if k not in ("bytes", "sha256")} for e in INDEX]
    for entry in INDEX:  # the files are the ones index.json describes
        data = (CORPUS / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["file"]
    if built["built_with"] == committed["built_with"]:  # same zlib and Pillow: same bytes
        assert built["cases"] == committed["cases"]
    assert sum(e["bytes"] for e in INDEX) < 300_000


# --------------------------------------------------------------------------- configure_pillow


def test_configure_pillow_holds_every_decode_in_the_process_to_our_limits():
    proc = subprocess.run(
        [*command("pillow_limits"), str(CORPUS)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(proc.stdout)
    foreign = ["tif", "eps", "ico", "pdf", "qoi", "dds"]
    assert all(report[f"foreign-{ext}.png"] == "unidentified" for ext in foreign), report
    assert report["tif with formats=['TIFF']"] == "unidentified"
    # 25M and 16.8M pixels: only Pillow's warning range, now an error; 10^8: Pillow's error.
    for name in ["bomb-png-5000x5000.png", "bomb-png-4097x4096.png", "bomb-png-10000x10000.png"]:
        assert report[name] == "bomb", (name, report[name])
    accepted = ["large-png-4096x4096-1bit.png", "digit.png", "jpeg-cmyk.jpg", "jpeg-mpo.jpg"]
    accepted += ["webp-animated.webp", "gif-animated.gif", "bmp-rle8.bmp"]
    assert all(report[name] == "opened" for name in accepted), report
    assert report["preprocess digit bytes"] is True
    assert "decompression bomb" in report["load_image_file bomb"]
    assert all(report[f"max_pixels={bad}"] == "ValueError" for bad in [0, -1, 2.5, True])
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
