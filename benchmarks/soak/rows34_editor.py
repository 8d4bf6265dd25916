"""Issue 34's editor findings: 4 (one address empties everyone's drawing through the blob
store) and 5 (CPU amplification by an editor value sent as file paths)."""

from __future__ import annotations

import json
import time

from benchmarks.soak.sampling import cpu_seconds, peak_reset, settle, vm
from benchmarks.soak.wire import a_one, count, file_data, png_bytes
from flaxdigits.serve.page import budgets


def row_blob_fairness(page, http) -> dict:
    """4: a visitor draws a 1; before its prediction, 520 one-byte blobs from one address."""
    one = a_one()
    for kind in ("layer", "composite"):
        page.post_blob(http, "honest-one", kind, one, "203.0.113.41")
    t, codes = time.perf_counter(), []
    for i in range(520):
        codes.append(page.post_blob(http, f"tiny{i}", "layer", b"x", "203.0.113.40").status_code)
    seconds = time.perf_counter() - t
    value = {"id": "honest-one", "background": None, "layers": [], "composite": None}
    status, wait = page.editor_join(http, value, "203.0.113.41")
    return {
        "row": "4: a drawn 1, then 520 one-byte blobs from one address, then its prediction",
        "flood_status": count(codes),
        "seconds": round(seconds, 1),
        "honest_drawing": status,
        "honest_seconds": round(wait, 2),
    }


def row_editor_paths(page, http) -> dict:
    """5: an editor value as file paths, up to 50 layers of one 4096x4096 PNG (one join)."""
    from PIL import Image

    bomb = png_bytes(Image.new("1", (4096, 4096), 1))
    r = http.post(
        "/gradio_api/upload",
        files={"files": ("b.png", bomb, "image/png")},
        headers={"X-Forwarded-For": "203.0.113.50"},
    )
    (path,) = r.json()
    page.honest("203.0.113.52")  # warm: the first event's own costs are not the row's
    out = {"row": f"5: editor value as paths, a {len(bomb):,}-byte 4096x4096 PNG"}
    entry = len(json.dumps(file_data(path), separators=(",", ":"))) + 1
    most = min(50, (budgets.OTHER_BODY_BYTES - 300) // entry)  # what fits in one join's body
    for layers in (1, most):
        value = {
            "background": file_data(path),
            "layers": [file_data(path)] * layers,
            "composite": None,
            "id": None,
        }
        out[f"{layers}_layers"] = path_join_cost(page, http, value)
    return out


def path_join_cost(page, http, value) -> dict:
    """One stroke event of this value: its answer, seconds, server CPU and peak memory."""
    settle(page.pid, 1)
    peak_reset(page.pid)
    rss0, cpu0 = vm(page.pid, "VmRSS"), cpu_seconds(page.pid)
    status, wait = page.editor_join(http, value, "203.0.113.51")
    join = {"data": ["draw", value, "mnist"]}
    return {
        "join_bytes": len(json.dumps(join, separators=(",", ":"))),
        "status": status,
        "seconds": round(wait, 2),
        "server_cpu_s": round(cpu_seconds(page.pid) - cpu0, 2),
        "peak_rss_growth_mib": round(vm(page.pid, "VmHWM") - rss0, 1),
    }
