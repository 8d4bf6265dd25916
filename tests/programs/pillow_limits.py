"""configure_pillow holds every decode of the process to our limits: each attempt, as JSON."""

import json
import sys

from PIL import Image, UnidentifiedImageError

from flaxdigits.serve.runtime import decode
from flaxdigits.serve.runtime.preprocess import preprocess

corpus = sys.argv[1]
decode.configure_pillow()
decode.configure_pillow()  # idempotent
report = {}


def attempt(name, **kwargs):
    # Image.open exactly as Gradio calls it: a path, no format list
    try:
        with Image.open(corpus + "/" + name, **kwargs) as img:
            img.load()
        return "opened"
    except UnidentifiedImageError:
        return "unidentified"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "bomb"
    except Exception as e:
        return type(e).__name__


for name in [
    "foreign-tif.png",
    "foreign-eps.png",
    "foreign-ico.png",
    "foreign-pdf.png",
    "foreign-qoi.png",
    "foreign-dds.png",
    "bomb-png-5000x5000.png",
    "bomb-png-10000x10000.png",
    "bomb-png-4097x4096.png",
    "large-png-4096x4096-1bit.png",
    "digit.png",
    "jpeg-cmyk.jpg",
    "webp-animated.webp",
    "gif-animated.gif",
    "bmp-rle8.bmp",
    "jpeg-mpo.jpg",
]:
    report[name] = attempt(name)
report["tif with formats=['TIFF']"] = attempt("foreign-tif.png", formats=["TIFF"])
with open(corpus + "/digit.png", "rb") as f:
    report["preprocess digit bytes"] = preprocess(f.read()).image.shape == (28, 28)
try:
    decode.load_image_file(corpus + "/bomb-png-5000x5000.png", max_pixels=10**9)
except decode.ImageInputError as e:
    report["load_image_file bomb"] = str(e)
for bad in [0, -1, 2.5, True]:
    try:
        decode.configure_pillow(max_pixels=bad)
    except ValueError:
        report[f"max_pixels={bad}"] = "ValueError"
print(json.dumps(report))
