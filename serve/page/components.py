"""The page's two input components, held to budgets Gradio's own do not have.

- bounded_sketchpad: the drawing canvas. Gradio keeps the blobs the browser sends for an editor
  value (background, composite, layers) in a dict per component until a prediction names their
  id; an id that is never submitted stays for good, and a layer index extends a list to that
  length. Here the store is bounded (BlobStore: layer indices the page offers, a TTL, a total and
  a per-client budget of values and bytes, each value charged at least ENTRY_CHARGE, the heaviest
  client's oldest value evicted first), and the value is handed over as the encoded bytes (or
  file paths) untouched: serve/runtime/decode.py decodes them with its size checks before any pixel,
  which no process-wide warnings filter can switch off. A value sent as file paths (the browser
  does, for a canvas with no new stroke) is held to the same rules as blobs: the page's one
  layer, and no image side over EDITOR_MAX_SIDE (checked from the file's header). Gradio's editor
  decodes inside `warnings.simplefilter("ignore")`, which while it runs disarms Pillow's
  bomb-warning-as-error rule in every other thread.
- path_file: gr.File(type="filepath") without the empty temp file Gradio's leaves per call.

Its budgets are named constants in serve/page/budgets.py, with every other budget of the server.
"""

from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import gradio as gr
from fastapi import HTTPException
from gradio.components.image_editor import AcceptBlobs
from gradio.utils import NamedString
from gradio_client import utils as client_utils
from PIL import Image

from flaxdigits.serve.page.budgets import (
    BLOB_BODY_BYTES,
    BLOB_KINDS,
    BLOB_TTL_S,
    CLIENT_BYTES,
    CLIENT_ENTRIES,
    CLIENT_STATE,
    EDITOR_LAYERS,
    EDITOR_MAX_SIDE,
    ENTRY_CHARGE,
    ID_CHARS,
    STORE_BYTES,
    STORE_ENTRIES,
)
from flaxdigits.serve.runtime.decode import FORMATS


@dataclass
class Pending:
    """One editor value's blobs as they arrive, before its prediction."""

    owner: str
    created: float
    background: bytes | None = None
    composite: bytes | None = None
    layers: list[bytes | None] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """What the value is charged: its blobs, at least ENTRY_CHARGE (an entry's own cost)."""
        parts = [self.background, self.composite, *self.layers]
        return max(ENTRY_CHARGE, sum(len(p) for p in parts if p is not None))


class BlobStore:
    """Pending editor values by id: bounded in count, bytes, values and bytes per owner, age."""

    def __init__(
        self,
        *,
        ttl_s: float = BLOB_TTL_S,
        max_bytes: int = STORE_BYTES,
        max_entries: int = STORE_ENTRIES,
        owner_bytes: int = CLIENT_BYTES,
        owner_entries: int = CLIENT_ENTRIES,
        clock=time.monotonic,
    ):
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.owner_bytes = owner_bytes
        self.owner_entries = owner_entries
        self.clock = clock
        self._entries: OrderedDict[str, Pending] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def put(self, value_id: str, kind: str, index: int | None, blob: bytes, owner: str) -> None:
        """Store one blob of a value; the oldest values go first when a budget is exceeded."""
        with self._lock:
            self._expire()
            entry = self._entries.get(value_id)
            if entry is None or entry.owner != owner:
                self._entries.pop(value_id, None)
                entry = Pending(owner=owner, created=self.clock())
                self._entries[value_id] = entry
            if kind == "layer":
                entry.layers.extend([None] * (index + 1 - len(entry.layers)))
                entry.layers[index] = blob
            else:
                setattr(entry, kind, blob)
            self._evict(owner, keep=value_id)

    def pop(self, value_id: str) -> Pending | None:
        """Take a value's blobs out (its prediction is running); None if expired or unknown."""
        with self._lock:
            self._expire()
            return self._entries.pop(value_id, None)

    def _expire(self) -> None:
        cutoff = self.clock() - self.ttl_s
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.created > cutoff:
                break
            self._entries.popitem(last=False)

    def _evict(self, owner: str, keep: str) -> None:
        """Under the lock: the owner back within its share (its oldest first), then the store
        within its budgets, the oldest value of the heaviest owner first; `keep` stays."""
        mine = [k for k, e in self._entries.items() if e.owner == owner and k != keep]
        size = sum(e.nbytes for k, e in self._entries.items() if e.owner == owner)
        while mine and (len(mine) + 1 > self.owner_entries or size > self.owner_bytes):
            size -= self._entries.pop(mine.pop(0)).nbytes
        total = sum(e.nbytes for e in self._entries.values())
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or total > self.max_bytes
        ):
            total -= self._entries.pop(self._heaviest_oldest(keep)).nbytes

    def _heaviest_oldest(self, keep: str) -> str:
        """The oldest value of the owner whose values weigh the most (`keep` aside)."""
        weight: dict[str, int] = {}
        for key, entry in self._entries.items():
            if key != keep:
                weight[entry.owner] = weight.get(entry.owner, 0) + entry.nbytes
        heaviest = max(weight, key=weight.__getitem__)
        return next(k for k, e in self._entries.items() if e.owner == heaviest and k != keep)


def _refuse(status: int, detail: str):
    return HTTPException(status_code=status, detail=detail)


def bounded_sketchpad(*, store: BlobStore | None = None, **kwargs) -> gr.Sketchpad:
    """gr.Sketchpad(**kwargs) whose blob store is bounded and whose value is left undecoded.

    The instance's accept_blobs (the server function the browser posts blobs to) and preprocess
    are replaced, not subclassed: a Gradio component subclass makes Gradio write a .pyi stub
    beside its module on import. preprocess returns {"background", "layers", "composite"}
    holding encoded image bytes (the browser's blobs) or file paths (a value sent as files),
    for flaxdigits.serve.runtime.preprocess to decode with decode.py's checks.
    """
    sketch = gr.Sketchpad(**kwargs)
    sketch.store = store = store or BlobStore()

    def accept_blobs(data: AcceptBlobs, request: gr.Request):
        """Store one blob of an editor value, within the budgets; refusals are 4xx, not 500s."""
        meta = data.data
        kind = meta.get("type") if isinstance(meta, dict) else None
        if kind not in BLOB_KINDS:
            raise _refuse(400, "Unknown blob type.")
        value_id = meta.get("id")
        if not isinstance(value_id, str) or not 0 < len(value_id) <= ID_CHARS:
            raise _refuse(400, "Bad editor value id.")
        index = None
        if kind == "layer":
            try:
                index = int(meta.get("index"))
            except (TypeError, ValueError):
                raise _refuse(400, "Bad layer index.") from None
            if not 0 <= index < EDITOR_LAYERS:
                raise _refuse(400, f"Layer index out of range: this canvas has {EDITOR_LAYERS}.")
        if len(data.files) != 1:
            raise _refuse(400, "Send one blob per request.")
        blob = data.files[0][1]
        if not isinstance(blob, bytes) or len(blob) > BLOB_BODY_BYTES:
            raise _refuse(413, "Blob too large.")
        if _image_side(io.BytesIO(blob)) > EDITOR_MAX_SIDE:
            raise _refuse(413, f"Blob image over this canvas's {EDITOR_MAX_SIDE:,}-pixel side.")
        store.put(value_id, kind, index, blob, owner=client_of(request))

    def preprocess(payload):
        """The value as encoded bytes or file paths (nothing decoded here); None: nothing drawn."""
        if payload is None:
            return None
        if payload.id is not None:
            entry = store.pop(payload.id)
            if entry is None:  # expired, evicted or never sent: as if nothing were drawn
                return None
            return {
                "background": entry.background,
                "layers": [blob for blob in entry.layers if blob is not None],
                "composite": entry.composite,
            }
        return editor_paths(payload)

    accept_blobs._is_server_fn = True  # what gradio.components.base.server marks
    sketch.accept_blobs = accept_blobs
    sketch.preprocess = preprocess
    return sketch


def editor_paths(payload) -> dict:
    """An editor value sent as file paths, held to the blobs' rules: at most the page's layers,
    every image's side within EDITOR_MAX_SIDE (read from its header); else a clear gr.Error."""
    if len(payload.layers) > EDITOR_LAYERS:
        raise gr.Error(
            f"This canvas has {EDITOR_LAYERS} layer; the value sent has {len(payload.layers)}.",
            print_exception=False,
        )
    value = {
        "background": payload.background.path if payload.background else None,
        "layers": [layer.path for layer in payload.layers],
        "composite": payload.composite.path if payload.composite else None,
    }
    for path in [value["background"], *value["layers"], value["composite"]]:
        if path is not None and _image_side(path) > EDITOR_MAX_SIDE:
            raise gr.Error(
                f"An editor image is larger than this canvas allows ({EDITOR_MAX_SIDE:,} px).",
                print_exception=False,
            )
    return value


def _image_side(path) -> int:
    """The longest side an image file's header declares (0 when it is no image we read: the
    decoder then says what is wrong with it)."""
    try:
        with Image.open(path, formats=FORMATS) as img:
            return max(img.size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return 0


def client_of(request) -> str:
    """The client address the guard resolved (a trusted proxy's X-Forwarded-For), else the peer."""
    state = getattr(request, "state", None)
    address = getattr(state, CLIENT_STATE, None) if state is not None else None
    if address:
        return address
    return getattr(getattr(request, "client", None), "host", None) or "unknown"


def path_file(**kwargs) -> gr.File:
    """gr.File(type="filepath", **kwargs) that leaves no empty temp file behind per call.

    Gradio's File opens a NamedTemporaryFile(delete=False) in its cache for every filepath it
    preprocesses and never uses it: one empty file per prediction, kept until the cache sweep.
    """
    upload = gr.File(type="filepath", **kwargs)

    def process_single_file(f) -> NamedString:
        if upload.file_types and not client_utils.is_valid_file(f.path, upload.file_types):
            raise gr.Error(
                "Invalid file type. Please upload a file that is one of these formats: "
                f"{upload.file_types}",
                print_exception=False,
            )
        return NamedString(f.path)

    upload._process_single_file = process_single_file
    return upload
