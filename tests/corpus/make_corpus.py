"""Build the hostile image corpus the serve fuzz tests use: `python tests/corpus/make_corpus.py`.

Every file here is made by this script, deterministically: by hand with struct and zlib (PNG, GIF,
BMP, WebP headers, decompression bombs that claim huge sizes over a few bytes of data), or by
Pillow's encoders from one drawn digit (JPEG, WebP, GIF, APNG, MPO and the foreign formats).
Nothing large is ever allocated: a bomb is a header plus a tiny stream. index.json lists each file
with its case family, what preprocessing must do with it, and why:

    match  decodes to the reference digit (digit.png) within a small tolerance (lossy formats)
    ok     any valid (28, 28) float32 image in [0, 1]
    empty  EmptyCanvasError ("Draw a digit first...")
    error  ImageInputError other than an empty canvas
    any    a valid image or an ImageInputError: corrupt data a decoder may or may not repair

Byte-for-byte output depends on the zlib and Pillow builds (index.json records both); the cases,
their names and expectations do not.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import random
import struct
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
SIZE = 40  # the digit canvas: big enough to preprocess, small enough to keep files tiny


# --------------------------------------------------------------------------------- the digit


def digit_mask(size: int = SIZE) -> np.ndarray:
    """A '7' with a crossbar: (size, size) bool, True where there is ink (no anti-aliasing)."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    s = size / 40
    draw.line([(11 * s, 7 * s), (29 * s, 7 * s), (16 * s, 34 * s)], fill=255, width=round(4 * s))
    draw.line([(15 * s, 21 * s), (26 * s, 21 * s)], fill=255, width=round(3 * s))
    return np.asarray(img) > 127


INK = digit_mask()
GREY = np.where(INK, 0, 255).astype(np.uint8)  # black ink on white, (64, 64)


def pil_bytes(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


# ------------------------------------------------------------------------------ PNG by hand


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def ihdr(width: int, height: int, depth: int = 8, ctype: int = 0, interlace: int = 0) -> bytes:
    return chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, interlace))


SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_raw(header: bytes, idat: bytes, *, before: bytes = b"", after: bytes = b"") -> bytes:
    """Signature + IHDR + extra chunks + one IDAT of the given (compressed) bytes + IEND."""
    return SIGNATURE + header + before + chunk(b"IDAT", idat) + after + chunk(b"IEND", b"")


def pack_rows(pixels: np.ndarray, depth: int) -> list[bytes]:
    """(H, W[, C]) unsigned samples -> PNG scanlines without filter bytes (big-endian, packed)."""
    h = pixels.shape[0]
    flat = pixels.reshape(h, -1)
    if depth == 16:
        return [row.astype(">u2").tobytes() for row in flat]
    if depth == 8:
        return [row.astype(np.uint8).tobytes() for row in flat]
    if depth == 1:
        return [row.tobytes() for row in np.packbits(flat.astype(np.uint8), axis=1)]
    per_byte = 8 // depth
    rows = []
    for row in flat.astype(np.uint8):
        padded = np.zeros(-(-len(row) // per_byte) * per_byte, np.uint8)
        padded[: len(row)] = row
        groups = padded.reshape(-1, per_byte)
        shifts = np.arange(per_byte - 1, -1, -1) * depth
        rows.append((groups << shifts).sum(axis=1).astype(np.uint8).tobytes())
    return rows


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def filter_rows(rows: list[bytes], bpp: int, filters: list[int]) -> bytes:
    """Apply PNG filter types (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth), cycling over rows."""
    if filters == [0]:  # the common case, and the only one used for the large images
        return b"".join(b"\x00" + row for row in rows)
    out, prior = bytearray(), bytes(len(rows[0]))
    for i, row in enumerate(rows):
        kind = filters[i % len(filters)]
        enc = bytearray(len(row))
        for x, value in enumerate(row):
            left = row[x - bpp] if x >= bpp else 0
            up = prior[x]
            corner = prior[x - bpp] if x >= bpp else 0
            predictor = (0, left, up, (left + up) // 2, _paeth(left, up, corner))[kind]
            enc[x] = (value - predictor) & 0xFF
        out += bytes([kind]) + enc
        prior = row
    return bytes(out)


ADAM7 = [
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
]


def png(
    pixels: np.ndarray,
    depth: int = 8,
    ctype: int = 0,
    *,
    before: bytes = b"",
    interlace: bool = False,
    filters: tuple[int, ...] = (0,),
    split: int = 0,
) -> bytes:
    """A complete PNG of (H, W[, C]) samples; split > 0 cuts the IDAT into chunks of that size."""
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    bpp = max(1, channels * depth // 8)
    if interlace:
        raw = b""
        for x0, y0, dx, dy in ADAM7:
            sub = pixels[y0::dy, x0::dx]
            if sub.size:
                raw += filter_rows(pack_rows(sub, depth), bpp, list(filters))
    else:
        raw = filter_rows(pack_rows(pixels, depth), bpp, list(filters))
    data = zlib.compress(raw, 9)
    header = ihdr(w, h, depth, ctype, int(interlace))
    if not split:
        return png_raw(header, data, before=before)
    idats = b"".join(chunk(b"IDAT", data[i : i + split]) for i in range(0, len(data), split))
    return SIGNATURE + header + before + idats + chunk(b"IEND", b"")


def plte(colours) -> bytes:
    return chunk(b"PLTE", bytes(v for rgb in colours for v in rgb))


# ------------------------------------------------------------------------- GIF, BMP, WebP by hand


def gif_header_only(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A GIF whose logical screen and one frame claim the given sizes over a 2-code LZW stream."""
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    desc = b"\x2c" + struct.pack("<HHHHB", 0, 0, *frame, 0)
    lzw = b"\x02" + b"\x02\x4c\x01" + b"\x00"  # min code size 2: CLEAR, EOI
    return head + desc + lzw + b"\x3b"


def bmp(width: int, height: int, bpp: int, pixels: bytes, *, palette=b"", compression=0) -> bytes:
    """BITMAPFILEHEADER + BITMAPINFOHEADER + palette + pixel data, fields as given."""
    offset = 14 + 40 + len(palette)
    info = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, bpp, compression, len(pixels), 2835, 2835, 0, 0
    )
    head = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    return head + info + palette + pixels


def bmp_rle8(grey: np.ndarray) -> bytes:
    """An 8-bit RLE BMP (bottom-up) of a 2-level image: runs per row, end of line, end of map."""
    data = bytearray()
    for row in grey[::-1]:
        x = 0
        while x < len(row):
            run = 1
            while x + run < len(row) and row[x + run] == row[x] and run < 255:
                run += 1
            data += bytes([run, 1 if row[x] == 0 else 0])
            x += run
        data += b"\x00\x00"
    data += b"\x00\x01"
    palette = b"\xff\xff\xff\x00\x00\x00\x00\x00"  # index 0 white, 1 black (BGRA)
    return bmp(grey.shape[1], grey.shape[0], 8, bytes(data), palette=palette, compression=1)


def webp_vp8x(width: int, height: int) -> bytes:
    """A RIFF/WEBP file with only a VP8X header claiming a width x height canvas."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00"
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def webp_vp8l_header(width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims width x height, followed by 8 bytes of zeros."""
    bits = (width - 1) | ((height - 1) << 14)  # 14 bits each, then alpha hint and version 0
    body = b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8
    vp8l = b"VP8L" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(vp8l)) + b"WEBP" + vp8l


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with the SOF0/SOF2 frame header claiming another size."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
    raise ValueError("no SOF marker")


def exif_block(entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    """A little-endian TIFF/EXIF block: IFD0 with (tag, type, count, 4-byte value) entries."""
    body = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\x00")
    return body + struct.pack("<I", next_ifd)


def orientation_exif(value: int) -> bytes:
    return exif_block([(0x0112, 3, 1, struct.pack("<H", value))])


# ------------------------------------------------------------------------------------- cases


def cases() -> list[tuple[str, str, str, str, bytes]]:
    """(file name, family, expect, note, bytes) for every corpus file."""
    out: list[tuple[str, str, str, str, bytes]] = []

    def add(name, family, expect, note, data):
        out.append((name, family, expect, note, data))

    rgb = np.repeat(GREY[..., None], 3, axis=2)
    alpha = np.where(INK, 255, 0).astype(np.uint8)
    sixteen = GREY.astype(np.uint16) * 257
    digit_png = png(GREY)
    add(
        "digit.png",
        "reference",
        "match",
        "the reference: 8-bit grey, black ink on white",
        digit_png,
    )

    # ---- bit depths, colour types, transparency: all decode to the same digit
    modes = "mode"
    ink01 = (~INK).astype(np.uint8)  # 1 = white
    add("png-grey-1bit.png", modes, "match", "1-bit grey", png(ink01, 1))
    add("png-grey-2bit.png", modes, "match", "2-bit grey", png(ink01 * 3, 2))
    add("png-grey-4bit.png", modes, "match", "4-bit grey", png(ink01 * 15, 4))
    add("png-grey-16bit.png", modes, "match", "16-bit grey (Pillow mode I;16)", png(sixteen, 16))
    add("png-rgb-16bit.png", modes, "match", "16-bit RGB", png(np.stack([sixteen] * 3, 2), 16, 2))
    rgba16 = np.stack([sixteen] * 3 + [np.full_like(sixteen, 65535)], 2)
    add("png-rgba-16bit.png", modes, "match", "16-bit RGBA, opaque", png(rgba16, 16, 6))
    sketch16 = np.stack([np.zeros_like(sixteen)] * 3 + [alpha.astype(np.uint16) * 257], 2)
    add(
        "png-rgba-16bit-sketchpad.png",
        modes,
        "match",
        "16-bit RGBA, ink only in alpha (transparent canvas, hidden RGB black)",
        png(sketch16, 16, 6),
    )
    sketch8 = np.stack([np.zeros_like(GREY)] * 3 + [alpha], 2)
    add(
        "png-rgba-sketchpad.png",
        modes,
        "match",
        "8-bit RGBA, ink only in alpha",
        png(sketch8, 8, 6),
    )
    white_brush = np.stack([np.full_like(GREY, 255)] * 3 + [alpha], 2)
    add(
        "png-rgba-white-brush.png",
        modes,
        "match",
        "white strokes on a transparent canvas (a dark theme's brush)",
        png(white_brush, 8, 6),
    )
    add(
        "png-la-8bit.png", modes, "match", "grey+alpha 8-bit", png(np.stack([GREY, alpha], 2), 8, 4)
    )
    la16 = np.stack([np.zeros_like(sixteen), alpha.astype(np.uint16) * 257], 2)
    add("png-la-16bit.png", modes, "match", "grey+alpha 16-bit, ink in alpha", png(la16, 16, 4))
    trns_palette = plte([(0, 0, 0), (0, 0, 0)]) + chunk(b"tRNS", b"\x00\xff")
    add(
        "png-palette-trns.png",
        modes,
        "match",
        "8-bit palette, two black entries, tRNS makes the background one transparent",
        png(INK.astype(np.uint8), 8, 3, before=trns_palette),
    )
    add(
        "png-palette-1bit-trns.png",
        modes,
        "match",
        "1-bit palette with tRNS",
        png(INK.astype(np.uint8), 1, 3, before=trns_palette),
    )
    add(
        "png-palette-4bit.png",
        modes,
        "match",
        "4-bit palette, no transparency",
        png(INK.astype(np.uint8) * 7, 4, 3, before=plte([(255, 255, 255)] * 7 + [(0, 0, 0)])),
    )
    add(
        "png-grey-trns.png",
        modes,
        "match",
        "grey with tRNS: white is transparent",
        png(GREY, before=chunk(b"tRNS", b"\x00\xff")),
    )
    add(
        "png-rgb-trns.png",
        modes,
        "match",
        "RGB with tRNS: white is transparent",
        png(rgb, 8, 2, before=chunk(b"tRNS", b"\x00\xff\x00\xff\x00\xff")),
    )
    add("png-interlaced.png", modes, "match", "Adam7 interlaced grey", png(GREY, interlace=True))
    add(
        "png-interlaced-rgba16.png",
        modes,
        "match",
        "Adam7 interlaced 16-bit RGBA, every filter type",
        png(rgba16, 16, 6, interlace=True, filters=(0, 1, 2, 3, 4)),
    )
    add(
        "png-filters.png",
        modes,
        "match",
        "rows filtered Sub, Up, Average, Paeth in turn",
        png(rgb, 8, 2, filters=(1, 2, 3, 4)),
    )
    add("png-inverted.png", modes, "match", "white ink on black", png(255 - GREY))
    add(
        "png-idat-1-byte-chunks.png",
        modes,
        "match",
        "IDAT split into 1-byte chunks",
        png(GREY, split=1),
    )
    ancillary = (
        chunk(b"gAMA", struct.pack(">I", 45455))
        + chunk(b"sRGB", b"\x00")
        + chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1))
        + chunk(b"tEXt", b"Comment\x00hello")
        + chunk(b"zzZz", b"private ancillary chunk")
    )
    add(
        "png-ancillary-chunks.png",
        modes,
        "match",
        "gAMA, sRGB, pHYs, tEXt, unknown",
        png(GREY, before=ancillary),
    )
    add("bmp-24bit.bmp", modes, "match", "24-bit BMP", pil_bytes(Image.fromarray(rgb), "BMP"))
    add(
        "bmp-1bit.bmp",
        modes,
        "match",
        "1-bit BMP",
        pil_bytes(Image.fromarray(GREY).convert("1"), "BMP"),
    )
    add(
        "bmp-8bit-palette.bmp",
        modes,
        "match",
        "8-bit palette BMP",
        pil_bytes(Image.fromarray(rgb).convert("P"), "BMP"),
    )
    opaque = np.dstack([rgb, np.full_like(GREY, 255)])
    add("bmp-32bit.bmp", modes, "match", "32-bit BMP", pil_bytes(Image.fromarray(opaque), "BMP"))
    add(
        "bmp-32bit-ink-in-4th-byte.bmp",
        modes,
        "empty",
        "32-bit BI_RGB BMP with ink only in the 4th byte: padding, not alpha, so all black",
        pil_bytes(Image.fromarray(sketch8), "BMP"),
    )
    top_down = bmp(
        SIZE, -SIZE, 8, GREY.tobytes(), palette=bytes(b for v in range(256) for b in (v, v, v, 0))
    )
    add(
        "bmp-top-down.bmp",
        modes,
        "match",
        "8-bit BMP with negative height (top-down rows)",
        top_down,
    )
    add("bmp-rle8.bmp", modes, "match", "8-bit run-length-encoded BMP", bmp_rle8(GREY))
    add(
        "jpeg-grey.jpg",
        modes,
        "match",
        "greyscale JPEG",
        pil_bytes(Image.fromarray(GREY), "JPEG", quality=95),
    )
    add(
        "jpeg-rgb.jpg",
        modes,
        "match",
        "RGB JPEG",
        pil_bytes(Image.fromarray(rgb), "JPEG", quality=90),
    )
    add(
        "jpeg-progressive.jpg",
        modes,
        "match",
        "progressive JPEG",
        pil_bytes(Image.fromarray(rgb), "JPEG", quality=90, progressive=True),
    )
    add(
        "jpeg-cmyk.jpg",
        modes,
        "match",
        "CMYK JPEG",
        pil_bytes(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95),
    )
    rotated = Image.fromarray(GREY).transpose(Image.Transpose.ROTATE_90)
    add(
        "jpeg-exif-rotated.jpg",
        modes,
        "match",
        "stored rotated, EXIF orientation 6 turns it back",
        pil_bytes(rotated, "JPEG", quality=95, exif=b"Exif\x00\x00" + orientation_exif(6)),
    )
    add(
        "webp-lossless.webp",
        modes,
        "match",
        "lossless WebP",
        pil_bytes(Image.fromarray(rgb), "WEBP", lossless=True),
    )
    add(
        "webp-lossy.webp",
        modes,
        "match",
        "lossy WebP",
        pil_bytes(Image.fromarray(rgb), "WEBP", quality=90),
    )
    add(
        "webp-rgba-sketchpad.webp",
        modes,
        "match",
        "lossless WebP, ink only in alpha",
        pil_bytes(Image.fromarray(sketch8), "WEBP", lossless=True, exact=True),
    )
    add("gif.gif", modes, "match", "GIF", pil_bytes(Image.fromarray(rgb).convert("P"), "GIF"))
    add(
        "gif-transparent.gif",
        modes,
        "match",
        "GIF with a transparent background index",
        pil_bytes(Image.fromarray(INK.astype(np.uint8)).convert("P"), "GIF", transparency=0),
    )

    # ---- animation: the first frame is the one read
    anim = "animated"
    blank = Image.new("RGB", (SIZE, SIZE), "white")
    first = Image.fromarray(rgb)
    add(
        "gif-animated.gif",
        anim,
        "match",
        "2 frames: the digit, then blank",
        pil_bytes(first.convert("P"), "GIF", save_all=True, append_images=[blank.convert("P")]),
    )
    add(
        "gif-animated-blank-first.gif",
        anim,
        "empty",
        "2 frames: blank, then the digit: only the first counts",
        pil_bytes(blank.convert("P"), "GIF", save_all=True, append_images=[first.convert("P")]),
    )
    one = pil_bytes(first.convert("P"), "GIF")
    dot_frame = b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # graphic control: 10 ms
    dot_frame += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    add(
        "gif-300-frames.gif",
        anim,
        "match",
        "the digit, then 299 one-pixel frames: only the first is decoded",
        one[:-1] + dot_frame * 299 + b"\x3b",
    )
    add(
        "png-apng.png",
        anim,
        "match",
        "animated PNG, 2 frames",
        pil_bytes(first, "PNG", save_all=True, append_images=[blank], default_image=False),
    )
    add(
        "webp-animated.webp",
        anim,
        "match",
        "animated WebP, 2 frames",
        pil_bytes(first, "WEBP", save_all=True, append_images=[blank], lossless=True),
    )
    add(
        "jpeg-mpo.jpg",
        anim,
        "match",
        "MPO (multi-picture JPEG, as phones write): 2 pictures",
        pil_bytes(first, "MPO", save_all=True, append_images=[blank], quality=95),
    )

    # ---- empty canvases and tiny images
    empty = "empty"
    add("png-white.png", empty, "empty", "all white", png(np.full((SIZE, SIZE), 255, np.uint8)))
    add("png-black.png", empty, "empty", "all black", png(np.zeros((SIZE, SIZE), np.uint8)))
    add(
        "png-transparent.png",
        empty,
        "empty",
        "fully transparent RGBA",
        png(np.zeros((SIZE, SIZE, 4), np.uint8), 8, 6),
    )
    dot = np.full((600, 600), 255, np.uint8)
    dot[300:305, 300:305] = 0
    add("png-stray-dot.png", empty, "empty", "a 5x5 dot on 600x600", png(dot))
    add("png-1x1-black.png", empty, "empty", "1x1", png(np.zeros((1, 1), np.uint8)))
    add("png-1x2.png", empty, "any", "1x2, one black pixel", png(np.array([[0, 255]], np.uint8)))
    add("gif-1x1.gif", empty, "empty", "1x1 GIF", pil_bytes(Image.new("P", (1, 1)), "GIF"))
    add("bmp-1x1.bmp", empty, "empty", "1x1 BMP", pil_bytes(Image.new("RGB", (1, 1)), "BMP"))
    add("jpeg-1x1.jpg", empty, "empty", "1x1 JPEG", pil_bytes(Image.new("L", (1, 1)), "JPEG"))

    # ---- decompression bombs: headers claiming huge images over a few bytes of data
    bomb = "bomb"
    tiny = zlib.compress(b"\x00" * 64)
    for w, h, note in [
        (100_000, 100_000, "10^10 pixels: Pillow's own bomb error"),
        (10_000, 10_000, "10^8 pixels: between Pillow's warning and error limits"),
        (5_000, 5_000, "2.5*10^7 pixels: only our 4096x4096 cap refuses it"),
        (4_097, 4_096, "one column over the cap"),
        (2**31 - 1, 1, "2^31-1 pixels in one row"),
        (2**32 - 1, 2**32 - 1, "the largest size a PNG header can state"),
        (0, 64, "zero width"),
        (64, 0, "zero height"),
    ]:
        add(f"bomb-png-{w}x{h}.png", bomb, "error", note, png_raw(ihdr(w, h), tiny))
    add(
        "bomb-png-4096x4096-rgba16-truncated.png",
        bomb,
        "error",
        "at the cap (16-bit RGBA: a 64 MB buffer), then almost no data",
        png_raw(ihdr(4096, 4096, 16, 6), tiny),
    )
    add(
        "bomb-gif-65535x65535.gif",
        bomb,
        "error",
        "GIF logical screen 65535x65535",
        gif_header_only((65535, 65535), (1, 1)),
    )
    add(
        "bomb-gif-frame-65535x65535.gif",
        bomb,
        "any",
        "1x1 screen, one 65535x65535 frame",
        gif_header_only((1, 1), (65535, 65535)),
    )
    jpeg = pil_bytes(Image.fromarray(GREY), "JPEG", quality=90)
    add(
        "bomb-jpeg-65500x65500.jpg",
        bomb,
        "error",
        "SOF claims 65500x65500",
        patch_jpeg_size(jpeg, 65500, 65500),
    )
    add(
        "bomb-jpeg-4096x4096.jpg",
        bomb,
        "any",
        "SOF claims 4096x4096 over 64x64 data",
        patch_jpeg_size(jpeg, 4096, 4096),
    )
    add("bomb-jpeg-0x0.jpg", bomb, "error", "SOF claims 0x0", patch_jpeg_size(jpeg, 0, 0))
    add(
        "bomb-webp-vp8x-16384x16384.webp",
        bomb,
        "error",
        "VP8X canvas 16384x16384, no image",
        webp_vp8x(16384, 16384),
    )
    add(
        "bomb-webp-vp8l-16384x16384.webp",
        bomb,
        "error",
        "VP8L header 16384x16384",
        webp_vp8l_header(16384, 16384),
    )
    add(
        "bomb-bmp-100000x100000.bmp",
        bomb,
        "error",
        "BMP header 100000x100000",
        bmp(100_000, 100_000, 8, b"\x00" * 16),
    )
    add(
        "bomb-bmp-negative-width.bmp", bomb, "error", "BMP width -64", bmp(-64, 64, 8, b"\x00" * 16)
    )
    add(
        "bomb-bmp-height-min-int.bmp",
        bomb,
        "error",
        "BMP height -2^31",
        bmp(64, -(2**31), 8, b"\x00" * 16),
    )
    add(
        "bomb-bmp-rle8-4096x4096.bmp",
        bomb,
        "any",
        "RLE8 BMP at the cap whose data ends at once (end of bitmap)",
        bmp(4096, 4096, 8, b"\x00\x01", palette=b"\xff\xff\xff\x00" * 2, compression=1),
    )
    text_bomb = zlib.compress(b"a" * (2 * 1024 * 1024), 9)
    add(
        "bomb-png-ztxt-2mb.png",
        bomb,
        "any",
        "a zTXt chunk inflating to 2 MB (over Pillow's 1 MB text chunk limit)",
        png(GREY, before=chunk(b"zTXt", b"Comment\x00\x00" + text_bomb)),
    )
    add(
        "bomb-png-iccp-2mb.png",
        bomb,
        "any",
        "an iCCP profile inflating to 2 MB",
        png(GREY, before=chunk(b"iCCP", b"icc\x00\x00" + text_bomb)),
    )
    trailing = zlib.compress(filter_rows(pack_rows(GREY, 8), 1, [0]) + b"\x00" * (8 << 20), 9)
    add(
        "bomb-png-idat-trailing-8mb.png",
        bomb,
        "any",
        "a 64x64 image whose IDAT stream inflates to 8 MB more than needed",
        png_raw(ihdr(SIZE, SIZE), trailing),
    )

    # ---- large but valid: at the 4096x4096 cap, or one pixel thick and very long
    large = "large"
    big = np.repeat(np.repeat(~INK, 64, axis=0), 64, axis=1).astype(np.uint8)  # (4096, 4096)
    add(
        "large-png-4096x4096-1bit.png",
        large,
        "match",
        "the digit at the pixel cap (1-bit)",
        png(big, 1),
    )
    for h, w in [(16384, 1024), (1024, 16384)]:
        rows, cols = np.arange(h) * SIZE // h, np.arange(w) * SIZE // w
        add(
            f"large-png-{w}x{h}-1bit.png",
            large,
            "ok",
            "a stretched digit, 16.7M pixels with a side at the 16384 limit",
            png((~INK)[rows][:, cols].astype(np.uint8), 1),
        )
    stripes = (np.arange(4096 * 4096) // 1000 % 2).astype(np.uint8)[None]
    add(
        "large-png-16777216x1.png",
        large,
        "error",
        "one row of 16.7M pixels: within the pixel cap, over the side limit",
        png(stripes, 1),
    )

    # ---- truncated and corrupt files
    bad = "corrupt"
    rgba16_png = png(rgba16, 16, 6)
    bases = {
        "png": digit_png,
        "png16": rgba16_png,
        "jpeg": jpeg,
        "jpegprog": pil_bytes(Image.fromarray(rgb), "JPEG", quality=90, progressive=True),
        "webp": pil_bytes(Image.fromarray(rgb), "WEBP", quality=90),
        "webpll": pil_bytes(Image.fromarray(rgb), "WEBP", lossless=True),
        "gif": pil_bytes(Image.fromarray(rgb).convert("P"), "GIF"),
        "bmp": pil_bytes(Image.fromarray(rgb), "BMP"),
    }
    for kind, data in bases.items():
        for label, cut in [("1", 1), ("16", 16), ("40", 40), ("half", len(data) // 2)]:
            add(
                f"cut-{kind}-{label}.bin",
                bad,
                "error",
                f"{kind} cut to {cut} of {len(data)} bytes",
                data[:cut],
            )
        add(f"cut-{kind}-last-byte.bin", bad, "any", f"{kind} without its last byte", data[:-1])
    rng = random.Random(6)
    for kind in ("png", "jpeg", "webp", "gif", "bmp"):
        for k in range(3):
            data = bytearray(bases[kind])
            for _ in range(4):
                at = rng.randrange(len(data) // 4, len(data))
                data[at] ^= 1 << rng.randrange(8)
            add(
                f"flip-{kind}-{k}.bin",
                bad,
                "any",
                f"{kind} with 4 bits flipped after the header",
                bytes(data),
            )
    add(
        "png-bad-ihdr-crc.png",
        bad,
        "error",
        "IHDR CRC wrong",
        SIGNATURE
        + chunk(b"IHDR", struct.pack(">IIBBBBB", SIZE, SIZE, 8, 0, 0, 0, 0), crc=0)
        + digit_png[33:],
    )
    idat_at = digit_png.index(b"IDAT") - 4
    length = struct.unpack(">I", digit_png[idat_at : idat_at + 4])[0]
    crc_at = idat_at + 8 + length
    add(
        "png-bad-idat-crc.png",
        bad,
        "any",
        "IDAT CRC wrong",
        digit_png[:crc_at] + b"\x00\x00\x00\x00" + digit_png[crc_at + 4 :],
    )
    for depth, ctype, note in [
        (3, 0, "bit depth 3"),
        (8, 1, "colour type 1"),
        (16, 3, "16-bit palette"),
        (1, 6, "1-bit RGBA"),
    ]:
        add(
            f"png-bad-ihdr-{depth}-{ctype}.png",
            bad,
            "error",
            note,
            png_raw(ihdr(SIZE, SIZE, depth, ctype), tiny),
        )
    add(
        "png-interlace-method-2.png",
        bad,
        "error",
        "interlace method 2",
        png_raw(ihdr(SIZE, SIZE, interlace=2), tiny),
    )
    add(
        "png-no-idat.png",
        bad,
        "error",
        "IHDR then IEND",
        SIGNATURE + ihdr(SIZE, SIZE) + chunk(b"IEND", b""),
    )
    add(
        "png-idat-not-zlib.png",
        bad,
        "error",
        "IDAT holds no zlib stream",
        png_raw(ihdr(SIZE, SIZE), b"\x00" * 100),
    )
    add(
        "png-filter-type-9.png",
        bad,
        "error",
        "scanlines with filter type 9",
        png_raw(ihdr(SIZE, SIZE), zlib.compress((b"\x09" + b"\x00" * SIZE) * SIZE)),
    )
    add(
        "png-palette-missing.png",
        bad,
        "any",
        "palette image without PLTE",
        png_raw(ihdr(SIZE, SIZE, 8, 3), zlib.compress((b"\x00" + b"\x01" * SIZE) * SIZE)),
    )
    add(
        "png-palette-index-out-of-range.png",
        bad,
        "any",
        "2-entry palette, pixels index 200",
        png(
            np.where(INK, 200, 0).astype(np.uint8), 8, 3, before=plte([(255, 255, 255), (0, 0, 0)])
        ),
    )
    add(
        "png-chunk-length-2gb.png",
        bad,
        "error",
        "an IDAT claiming 2^31-1 bytes",
        SIGNATURE + ihdr(SIZE, SIZE) + struct.pack(">I", 2**31 - 1) + b"IDAT" + b"\x00" * 32,
    )
    add(
        "png-unknown-critical-chunk.png",
        bad,
        "any",
        "an unknown critical chunk before IDAT",
        png(GREY, before=chunk(b"ZZZZ", b"must understand")),
    )
    add("gif-no-frames.gif", bad, "error", "header and trailer only", bases["gif"][:13] + b"\x3b")
    gif = bases["gif"]
    lzw_at = gif.index(b"\x2c") + 10
    add(
        "gif-lzw-garbage.gif",
        bad,
        "any",
        "the frame's LZW data replaced by noise",
        gif[: lzw_at + 1]
        + bytes([255])
        + bytes(random.Random(1).randrange(256) for _ in range(255))
        + b"\x00\x3b",
    )
    webp = bases["webp"]
    add(
        "webp-riff-size-lies.webp",
        bad,
        "any",
        "RIFF size 2^32-1",
        webp[:4] + b"\xff\xff\xff\xff" + webp[8:],
    )
    add("polyglot-png-then-jpeg.png", bad, "error", "PNG signature, JPEG body", SIGNATURE + jpeg)
    add("polyglot-gif-then-png.gif", bad, "error", "GIF89a header, PNG body", b"GIF89a" + digit_png)

    # ---- EXIF: orientation values outside 1..8, garbage, a loop
    exif = "exif"
    for value in (0, 9, 65535):
        add(
            f"exif-orientation-{value}.png",
            exif,
            "match",
            f"orientation {value}: not a real orientation, ignored",
            png(GREY, before=chunk(b"eXIf", orientation_exif(value))),
        )
    add(
        "exif-garbage.png",
        exif,
        "any",
        "eXIf chunk of noise after a TIFF header",
        png(GREY, before=chunk(b"eXIf", b"II*\x00\x08\x00\x00\x00" + bytes(range(200)))),
    )
    add(
        "exif-ifd-loop.png",
        exif,
        "any",
        "IFD0 whose next-IFD offset points back at itself",
        png(GREY, before=chunk(b"eXIf", exif_block([(0x0112, 3, 1, b"\x06\x00")], next_ifd=8))),
    )
    add(
        "exif-count-huge.jpg",
        exif,
        "any",
        "an EXIF entry claiming 2^32-1 values",
        pil_bytes(
            Image.fromarray(GREY),
            "JPEG",
            exif=b"Exif\x00\x00" + exif_block([(0x010E, 2, 2**32 - 1, b"\x00\x01\x00\x00")]),
        ),
    )

    # ---- other formats, renamed or not: never decoded
    foreign = "foreign"
    small = Image.fromarray(rgb).resize((16, 16))
    fixed = time.gmtime(1_577_836_800)  # 2020-01-01: no build date in the file
    for fmt, ext, kwargs in [
        ("TIFF", "tif", {}),
        ("ICO", "ico", {"sizes": [(32, 32)]}),
        ("PPM", "ppm", {}),
        ("PCX", "pcx", {}),
        ("TGA", "tga", {}),
        ("EPS", "eps", {}),
        ("PDF", "pdf", {"creationDate": fixed, "modDate": fixed}),
        ("SGI", "sgi", {}),
        ("DDS", "dds", {}),
        ("QOI", "qoi", {}),
        ("IM", "im", {}),
    ]:
        img = small.convert("RGBA") if fmt in ("QOI", "DDS") else small
        add(
            f"foreign-{ext}.png",
            foreign,
            "error",
            f"{fmt} named .png",
            pil_bytes(img, fmt, **kwargs),
        )
    add("foreign-xbm.xbm", foreign, "error", "XBM (text)", pil_bytes(small.convert("1"), "XBM"))
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40">'
    svg += b'<path d="M11 7H29L16 34"/></svg>'
    add("foreign-svg.svg", foreign, "error", "SVG", svg)
    add(
        "foreign-html.png", foreign, "error", "HTML", b"<!doctype html><img src=x onerror=alert(1)>"
    )
    add("foreign-json.png", foreign, "error", "JSON", b'{"image": [[0, 255], [255, 0]]}')
    add("foreign-shell.png", foreign, "error", "a shell script", b"#!/bin/sh\nrm -rf /\n")
    add("foreign-utf16.png", foreign, "error", "UTF-16 text with BOM", "seven".encode("utf-16"))
    add("foreign-elf.png", foreign, "error", "an ELF header", b"\x7fELF\x02\x01\x01" + b"\x00" * 57)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr(zipfile.ZipInfo("digit.png", date_time=(2020, 1, 1, 0, 0, 0)), digit_png)
    add("foreign-zip.png", foreign, "error", "a zip holding a PNG", zbuf.getvalue())
    add("foreign-gzip.png", foreign, "error", "a gzipped PNG", gzip.compress(digit_png, mtime=0))

    # ---- random bytes, bare and behind each accepted format's magic number
    noise = "random"
    rng = random.Random(2024)
    add("random-empty.bin", noise, "error", "0 bytes", b"")
    for n in (1, 16, 100, 1000, 4000):
        add(f"random-{n}.bin", noise, "error", f"{n} random bytes", rng.randbytes(n))
    for magic_name, magic in [
        ("png", SIGNATURE),
        ("jpeg", b"\xff\xd8\xff\xe0"),
        ("gif", b"GIF89a"),
        ("webp", b"RIFF\x00\x01\x00\x00WEBPVP8 "),
        ("bmp", b"BM"),
    ]:
        add(
            f"random-after-{magic_name}-magic.bin",
            noise,
            "error",
            "magic + 500 random bytes",
            magic + rng.randbytes(500),
        )
    return out


def build(out_dir: Path) -> dict:
    """Write every case and index.json into out_dir; returns the index."""
    out_dir.mkdir(parents=True, exist_ok=True)
    old = out_dir / "index.json"
    stale = {e["file"] for e in json.loads(old.read_text())["cases"]} if old.exists() else set()
    entries = []
    for name, family, expect, note, data in cases():
        (out_dir / name).write_bytes(data)
        entries.append(
            {
                "file": name,
                "family": family,
                "expect": expect,
                "note": note,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    names = [e["file"] for e in entries]
    if len(set(names)) != len(names):
        raise ValueError("duplicate corpus file names")
    for name in stale - set(names):  # cases renamed or dropped since the last build
        (out_dir / name).unlink(missing_ok=True)
    index = {
        "built_with": {"pillow": PIL.__version__, "zlib": zlib.ZLIB_RUNTIME_VERSION},
        "cases": entries,
    }
    lines = ",\n  ".join(json.dumps(e) for e in entries)  # one case a line: reviewable diffs
    text = f'{{"built_with": {json.dumps(index["built_with"])},\n "cases": [\n  {lines}\n]}}\n'
    (out_dir / "index.json").write_text(text)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write (default: here)")
    args = parser.parse_args()
    index = build(args.out)
    total = sum(e["bytes"] for e in index["cases"])
    print(f"{len(index['cases'])} files, {total:,} bytes in {args.out}")


if __name__ == "__main__":
    main()
