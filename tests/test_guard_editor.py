"""The editor's bounded blob store and the page's components (page/components.py), no server."""

from __future__ import annotations

import io

import gradio as gr
import pytest
from fastapi import HTTPException
from gradio.components.image_editor import EditorData
from PIL import Image

from flaxdigits.serve.page import components
from flaxdigits.serve.page.components import BlobStore, bounded_sketchpad, path_file
from flaxdigits.serve.runtime.preprocess import preprocess
from tests.support.drawings import drawing


class Blobs:
    """What Gradio's component_server hands the server function: .data and .files."""

    def __init__(self, value_id="v", kind="layer", index=0, blob=b"x" * 100):
        self.data = {"id": value_id, "type": kind, "index": index}
        self.files = [("layer_0.png", blob)]


class Request:
    class client:  # noqa: N801 - the shape of gr.Request.client
        host = "10.0.0.1"


def test_values_expire_after_the_ttl():
    now = [0.0]
    store = BlobStore(ttl_s=10, clock=lambda: now[0])
    store.put("a", "layer", 0, b"x", owner="c")
    now[0] = 5
    store.put("b", "layer", 0, b"x", owner="c")
    now[0] = 11
    assert store.pop("a") is None
    assert store.pop("b").layers == [b"x"]


def test_oldest_values_are_evicted_past_the_count_and_byte_budgets():
    store = BlobStore(max_entries=3, max_bytes=10**9, owner_bytes=10**9)
    for i in range(10):
        store.put(f"v{i}", "layer", 0, b"x", owner=f"c{i}")
    assert len(store) == 3 and store.pop("v9") is not None and store.pop("v0") is None
    store = BlobStore(max_bytes=20_000, owner_bytes=10**9)
    for i in range(10):
        store.put(f"v{i}", "composite", None, b"x" * 5000, owner=f"c{i}")
    assert store.nbytes <= 20_000 and store.pop("v9") is not None


def test_one_client_cannot_take_more_than_its_share():
    store = BlobStore(owner_bytes=30_000)
    store.put("other", "layer", 0, b"x" * 5000, owner="honest")
    for i in range(50):
        store.put(f"flood{i}", "layer", 0, b"x" * 10_000, owner="flooder")
    flooder = [k for k, e in store._entries.items() if e.owner == "flooder"]
    assert sum(store._entries[k].nbytes for k in flooder) <= 30_000
    assert store.pop("other") is not None  # the other client's value survives


@pytest.mark.parametrize(
    ("blobs", "status"),
    [
        (Blobs(index=20_000_000), 400),
        (Blobs(index=1), 400),
        (Blobs(index=-1), 400),
        (Blobs(index="null"), 400),
        (Blobs(kind="everything"), 400),
        (Blobs(value_id="x" * 1000), 400),
        (Blobs(value_id=None), 400),
        (Blobs(blob=b"x" * (components.BLOB_BODY_BYTES + 1)), 413),
    ],
)
def test_blobs_outside_what_the_page_sends_are_refused_with_4xx(blobs, status):
    sketch = bounded_sketchpad()
    with pytest.raises(HTTPException) as e:
        sketch.accept_blobs(blobs, Request())
    assert e.value.status_code == status
    assert len(sketch.store) == 0


def test_the_editor_value_is_handed_over_undecoded_and_read_by_preprocess():
    sketch = bounded_sketchpad(type="filepath")
    buffer = io.BytesIO()
    drawing().save(buffer, format="PNG")
    for kind, index in (("background", None), ("layer", 0), ("composite", None)):
        sketch.accept_blobs(Blobs("v1", kind, index, buffer.getvalue()), Request())
    value = sketch.preprocess(EditorData(id="v1"))
    assert value["composite"] == buffer.getvalue() and value["layers"] == [buffer.getvalue()]
    assert preprocess(value).image.shape == (28, 28)
    assert sketch.preprocess(EditorData(id="v1")) is None  # taken once; then as if empty
    assert sketch.get_block_name() == "imageeditor"  # the frontend component is Gradio's own
    assert "accept_blobs" in sketch.get_config()["server_fns"]


def test_path_file_leaves_no_empty_file_per_call(tmp_path, monkeypatch):
    from gradio.data_classes import FileData

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    upload = path_file(file_types=[".png"])
    image = tmp_path / "digit.png"
    drawing().save(image)
    for _ in range(3):
        assert upload.preprocess(FileData(path=str(image))) == str(image)
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*"))
    with pytest.raises(gr.Error, match="Invalid file type"):
        upload.preprocess(FileData(path=str(tmp_path / "notes.txt")))


def test_blobs_are_owned_by_the_client_the_guard_resolved():
    from starlette.requests import Request as StarletteRequest

    from flaxdigits.serve.page.components import client_of

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "client": ("::1", 1)}
    assert client_of(gr.Request(StarletteRequest(scope))) == "::1"  # no guard: the peer
    scope["state"] = {components.CLIENT_STATE: "198.51.100.7"}  # behind a trusted proxy
    assert client_of(gr.Request(StarletteRequest(scope))) == "198.51.100.7"


def test_one_client_keeps_a_few_pending_values_and_each_costs_at_least_a_drawing():
    store = BlobStore(owner_entries=4)
    for i in range(520):
        store.put(f"tiny{i}", "layer", 0, b"x", owner="flooder")
    assert len(store) == 4 and store.pop("tiny519") is not None
    assert store.nbytes == 3 * components.ENTRY_CHARGE  # one byte is charged as a drawing


def test_past_the_store_budget_the_heaviest_clients_oldest_value_goes_first():
    store = BlobStore(max_entries=6, owner_entries=10, owner_bytes=10**9, max_bytes=10**9)
    store.put("honest", "layer", 0, b"x" * 20_000, owner="honest")
    for i in range(3):
        store.put(f"a{i}", "layer", 0, b"x" * 20_000, owner="a")
    for i in range(10):  # many addresses' floods: each new value evicts the heaviest's oldest
        store.put(f"b{i}", "layer", 0, b"x" * 50_000, owner="b")
    assert len(store) == 6
    assert store.pop("honest") is not None
    assert store.pop("b9") is not None  # the value just stored is kept


def png_of(size, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_blob_past_the_canvas_side_is_refused():
    sketch = bounded_sketchpad()
    big = Blobs(blob=png_of((components.EDITOR_MAX_SIDE + 1, 10), "1"))
    with pytest.raises(HTTPException) as e:
        sketch.accept_blobs(big, Request())
    assert e.value.status_code == 413 and len(sketch.store) == 0
    sketch.accept_blobs(Blobs(blob=png_of((400, 400))), Request())
    assert len(sketch.store) == 1


def test_an_editor_value_sent_as_paths_is_held_to_the_blobs_rules(tmp_path):
    from gradio.data_classes import FileData

    sketch = bounded_sketchpad(type="filepath")
    canvas, big = tmp_path / "canvas.png", tmp_path / "big.png"
    canvas.write_bytes(png_of((400, 400)))
    big.write_bytes(png_of((4096, 4096), "1"))

    def value(background, layers):
        files = [FileData(path=str(p)) for p in layers]
        return EditorData(background=FileData(path=str(background)), layers=files)

    read = sketch.preprocess(value(canvas, [canvas]))
    assert read == {"background": str(canvas), "layers": [str(canvas)], "composite": None}
    with pytest.raises(gr.Error, match="1 layer"):
        sketch.preprocess(value(canvas, [canvas] * 50))
    with pytest.raises(gr.Error, match="2,048 px"):
        sketch.preprocess(value(big, []))
