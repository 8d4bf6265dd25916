"""Editor decodes in threads beside bomb uploads and code that switches warnings off.

Run by tests/test_guard_bombs.py in a subprocess (configure_pillow is process-wide). Prints one
JSON line: how many bombs were refused, how many images over the pixel cap Pillow decoded
(a spy on ImageFile.load), and any other outcome.

    python tests/programs/bomb_race.py ROUNDS [--gradio-decode]

--gradio-decode routes the editor values through Gradio's own Sketchpad.preprocess instead of
ours: the variant the test must see fail.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import threading
import warnings
from pathlib import Path

from PIL import Image, ImageDraw, ImageFile

from flaxdigits.serve.page.components import bounded_sketchpad
from flaxdigits.serve.runtime.decode import (
    MAX_PIXELS,
    ImageInputError,
    configure_pillow,
    load_image_file,
)
from flaxdigits.serve.runtime.preprocess import preprocess

THREADS_PER_KIND = 3
OPS_PER_THREAD = 4


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def main(rounds: int, gradio_decode: bool) -> dict:
    import gradio as gr
    from gradio.components.image_editor import EditorData, EditorDataBlobs

    configure_pillow()
    bomb = png(Image.new("1", (4097, 4096)))  # just over MAX_PIXELS: Pillow only warns
    drawing = Image.new("RGB", (400, 400), "white")
    ImageDraw.Draw(drawing).line([(200, 60), (200, 340)], fill="black", width=28)
    honest = png(drawing)
    bomb_file = Path(tempfile.mkdtemp()) / "bomb.png"
    bomb_file.write_bytes(bomb)

    big_loads = []
    original_load = ImageFile.ImageFile.load

    def spying_load(self):
        if self.size[0] * self.size[1] > MAX_PIXELS:
            big_loads.append(self.size)
        return original_load(self)

    ImageFile.ImageFile.load = spying_load

    ours = bounded_sketchpad(type="filepath", image_mode="RGBA")
    theirs = gr.Sketchpad(type="pil", image_mode="RGBA")
    outcomes: dict[str, int] = {}
    lock = threading.Lock()

    def count(key):
        with lock:
            outcomes[key] = outcomes.get(key, 0) + 1

    def editor_value(blob: bytes, key: str):
        if gradio_decode:
            theirs.blob_storage[key] = EditorDataBlobs(background=None, layers=[], composite=blob)
            return theirs.preprocess(EditorData(id=key))
        ours.store.put(key, "composite", None, blob, owner="race")
        return ours.preprocess(EditorData(id=key))

    def editor(worker: int, rnd: int):
        for op in range(OPS_PER_THREAD):
            key = f"{rnd}-{worker}-{op}"
            for name, blob in (("bomb", bomb), ("honest", honest)):
                try:
                    preprocess(editor_value(blob, key + name))
                    count(f"editor {name}: read")
                except ImageInputError:
                    count(f"editor {name}: refused")
                except Exception as e:  # noqa: BLE001 - every other outcome is reported
                    count(f"editor {name}: {type(e).__name__}")

    def uploader(worker: int, rnd: int):
        for _ in range(OPS_PER_THREAD):
            try:
                load_image_file(bomb_file)
                count("upload bomb: read")
            except ImageInputError:
                count("upload bomb: refused")

    def ignorer(worker: int, rnd: int):
        # Gradio's editor decodes inside this block; Gradio's own conversion runs here too.
        for _ in range(OPS_PER_THREAD * 4):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theirs.convert_and_format_image(honest)

    for rnd in range(rounds):
        threads = [
            threading.Thread(target=fn, args=(i, rnd))
            for fn in (editor, uploader, ignorer)
            for i in range(THREADS_PER_KIND)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return {"rounds": rounds, "big_loads": len(big_loads), "outcomes": outcomes}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), "--gradio-decode" in sys.argv)))
