"""Reading untrusted image bytes: the formats, byte and pixel caps every decode is held to.

The one decoding policy of the serve side: files (load_image_file), bytes already in memory
(decode_bytes), the size of any image or array (check_size), and the process-wide Pillow limits a
server sets once (configure_pillow). Pillow and the standard library only.
"""

from __future__ import annotations

import io
import os
import warnings

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from flaxdigits.core.files import ReadError, read_capped

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
FORMAT_NAMES = "PNG, JPEG, WebP, GIF or BMP"  # FORMATS, as people write them
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")  # FORMATS' file name endings
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 4096 * 4096  # far below Pillow's own bomb limit, so we refuse before decoding
# Pillow keeps an 8-byte pointer per image row: a 16.7M x 1 column within MAX_PIXELS peaked at
# 430 MB in preprocess, a 4096x4096 RGBA canvas at 225 MB (tests/test_preprocess_fuzz.py).
MAX_SIDE = 16384


class ImageInputError(ValueError):
    """The input cannot be read as an image: unreadable, unsupported or too large."""


def load_image_file(
    path, *, max_bytes: int = MAX_FILE_BYTES, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Open an image file defensively: byte and pixel caps, known formats, first frame only.

    Args:
        path: the file to read.
        max_bytes: refuse larger files.
        max_pixels: refuse images with more pixels (decompression bombs), before decoding.

    Returns:
        The decoded first frame, EXIF orientation applied, detached from the file.

    Raises:
        ImageInputError: missing, unreadable, too large, truncated or not PNG/JPEG/WebP/GIF/BMP.
    """
    name = os.fsdecode(path) if isinstance(path, bytes | os.PathLike) else str(path)
    try:
        data = read_capped(path, max_bytes, what="file")
    except ReadError as e:
        raise ImageInputError(f"{name}: {e}") from None
    return decode_image(data, name, max_pixels)


def decode_bytes(data: bytes | bytearray) -> Image.Image:
    """An encoded image file already in memory, held to the same caps as load_image_file."""
    if len(data) > MAX_FILE_BYTES:
        raise ImageInputError(f"the image is larger than the {MAX_FILE_BYTES:,}-byte limit")
    return decode_image(bytes(data), "image", MAX_PIXELS)


def decode_image(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Decode image bytes with the format allow-list and the pixel cap; name starts messages."""
    if not data:
        raise ImageInputError(f"{name}: empty file, not an image")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        if img.width * img.height > max_pixels:
            raise ImageInputError(
                f"{name}: {img.width}x{img.height} is more than the {max_pixels:,}-pixel limit"
            )
        if max(img.size) > MAX_SIDE:
            raise ImageInputError(
                f"{name}: {img.width}x{img.height} has a side over the {MAX_SIDE:,}-pixel limit"
            )
        img.load()  # the first frame of an animated GIF/WebP
        return ImageOps.exif_transpose(img)
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise ImageInputError(f"{name}: not an image ({FORMAT_NAMES} expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the latter: an error
        # after configure_pillow, for sizes between Image.MAX_IMAGE_PIXELS and twice it
        raise ImageInputError(f"{name}: too many pixels (decompression bomb?)") from None
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, struct.error, ...
        raise ImageInputError(f"{name}: cannot decode image: {e}") from None


def check_size(width: int, height: int) -> None:
    """Refuse an image (or array) that is empty, over MAX_PIXELS or has a side over MAX_SIDE."""
    if width < 1 or height < 1:
        raise ImageInputError(f"the image is empty ({width}x{height} pixels)")
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            f"the image is {width}x{height}: more than the {MAX_PIXELS:,}-pixel limit"
        )
    if max(width, height) > MAX_SIDE:
        raise ImageInputError(
            f"the image is {width}x{height}: a side over the {MAX_SIDE:,}-pixel limit"
        )


def configure_pillow(max_pixels: int = MAX_PIXELS, formats=FORMATS) -> None:
    """Hold every Pillow decode in this process to our limits: call once when a server starts.

    Frameworks decode uploads before preprocess sees them (Gradio's Image, Sketchpad and
    ImageEditor call `PIL.Image.open` with no format list), so the limits must be Pillow's own,
    process-wide: `Image.MAX_IMAGE_PIXELS = max_pixels` with DecompressionBombWarning made an
    error (Pillow only warns up to twice the limit), truncated images never padded, and every
    decoder not in `formats` switched off through Pillow's public `register_open` (EPS, which
    runs Ghostscript, among them): such files then fail as "cannot identify image file", even
    with `Image.open(formats=[...])`. Pillow has no global format switch of its own. A plugin
    imported after this call registers itself again: call it after importing such plugins.

    Args:
        max_pixels: the largest image (width * height) any decoder may open.
        formats: Pillow format names to keep (default FORMATS; one this Pillow was built
            without stays absent); None keeps every decoder.

    Raises:
        ValueError: max_pixels is not a positive integer.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    if formats is None:
        return
    Image.init()  # import every plugin now, so that none registers itself again later
    keep = {f.upper() for f in formats}
    for name, (factory, _accept) in list(Image.OPEN.items()):
        if name not in keep:
            Image.register_open(name, factory, _never)


def _never(prefix: bytes) -> bool:
    """The accept test of a switched-off Pillow decoder."""
    return False
