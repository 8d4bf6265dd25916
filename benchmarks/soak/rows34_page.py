"""What issue 34's rows need of a served page: its address, process, temp dir and log, the
canvas's ids, an honest prediction, an editor value's queue join and blobs."""

from __future__ import annotations

import json
import random
import time

from benchmarks.soak.sampling import dir_stats
from benchmarks.soak.wire import page_config, sketch_and_stroke


class Page:
    """A served page (serving.Served) as the rows see it."""

    def __init__(self, served, files, answers):
        self.served = served
        self.url, self.port, self.pid = served.url, served.port, served.pid
        self.tmp, self.log = served.tmp, served.log
        self.files, self.answers = files, answers
        self.sketch, self.fn_stroke = sketch_and_stroke(page_config(self.url))

    def temp_files(self) -> tuple[int, int]:
        """(files, bytes) under the server's temp dir."""
        nbytes, files = dir_stats(self.tmp)
        return files, nbytes

    def honest(self, address: str) -> dict:
        """One honest /predict through gradio_client: correct?, seconds."""
        from gradio_client import Client, handle_file

        client = Client(self.url, verbose=False, headers={"X-Forwarded-For": address})
        path = self.files[0]
        t = time.perf_counter()
        try:
            result = client.predict(image=handle_file(str(path)), api_name="/predict")
        except Exception as e:  # noqa: BLE001 - the row reports it
            return {"error": f"{type(e).__name__}: {e}"[:200], "seconds": time.perf_counter() - t}
        want = self.answers[str(path)]
        correct = all(result["models"][n]["digit"] == p.digit for n, p in want.items())
        return {"correct": correct, "seconds": round(time.perf_counter() - t, 2)}

    def editor_join(self, http, value, address: str, timeout: float = 300.0) -> tuple[str, float]:
        """Queue a stroke event with this editor value; (the status line or error, seconds)."""
        session = f"{random.getrandbits(48):x}"  # noqa: S311 - an id, not a secret
        body = {
            "data": ["draw", value, "mnist"],
            "fn_index": self.fn_stroke,
            "session_hash": session,
            "event_data": None,
            "trigger_id": self.sketch,
        }
        headers = {"X-Forwarded-For": address, "Content-Type": "application/json"}
        t = time.perf_counter()
        content = json.dumps(body, separators=(",", ":"))
        r = http.post("/gradio_api/queue/join", content=content, headers=headers)
        if r.status_code != 200:
            return f"join {r.status_code}: {r.text[:100]}", time.perf_counter() - t
        url = f"/gradio_api/queue/data?session_hash={session}"
        with http.stream("GET", url, headers=headers, timeout=timeout) as stream:
            text = completed(stream.iter_lines())
        return text, time.perf_counter() - t

    def post_blob(self, http, value_id, kind, blob, address, index=0):
        """One blob of an editor value to the canvas's accept_blobs."""
        form = {
            "component_id": str(self.sketch),
            "session_hash": f"s{value_id}"[:20],
            "fn_name": "accept_blobs",
            "id": value_id,
            "type": kind,
            **({"index": str(index)} if kind == "layer" else {}),
        }
        files = {"file": (f"{kind}.png", blob, "image/png")}
        headers = {"X-Forwarded-For": address}
        return http.post("/gradio_api/component_server", data=form, files=files, headers=headers)


def completed(lines) -> str:
    """The page's status line from an event stream's process_completed message (or the error)."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        message = json.loads(line[5:])
        if message.get("msg") == "process_completed":
            output = message.get("output") or {}
            data = output.get("data")
            text = data[1] if data else f"error: {output.get('error')}"
            return str(text)[:200]
    return "no answer"
