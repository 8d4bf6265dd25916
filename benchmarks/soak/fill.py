"""Before the measured window, the server's bounded stores filled to their bounds, so that RSS
growth in the window is growth that does not stop (a leak), not a store filling up.

The stores and what fills them (each bound as the server's probe reports it, so a budget changed
in serve/page/budgets.py or Gradio's changes the fill with it):
- Gradio's session states (budgets.SESSIONS), the sessions whose messages wait for an event stream
  nobody opens (budgets.PENDING_SESSIONS) and Gradio's per-event analytics records (its
  GRADIO_ANALYTICS_MAX_EVENTS, 10,000 by default): queue joins of the /predict event with no
  image, each from a fresh session and address, never streamed (each is answered "No image");
- the guard's rate buckets (budgets.MAX_CLIENTS addresses x the route classes with a rate):
  empty uploads, each from a fresh address (Gradio answers 400).
The soak's own mix fills them too, slowly: at 20,000 requests the sessions are full, the waiting
sessions and the analytics records are a fifth full, the rate buckets a twentieth.
"""

from __future__ import annotations

import itertools
import json
import threading
import time

from benchmarks.soak.sampling import Counter
from benchmarks.soak.wire import page_config

THREADS = 8
FILL_S = 900  # the most a fill may take; past it the report says which stores are not full
SETTLE_S = 60  # the most the server's own queue and reservations may take to drain after it
JOIN_STORES = ("sessions", "pending_sessions", "event_analytics")


def address(i: int) -> str:
    """The ith fresh client address (100.64.0.0/10, apart from every other client's)."""
    return f"100.{64 + i // 65536}.{i // 256 % 256}.{i % 256}"


def predict_fn(url: str) -> int:
    config = page_config(url)
    return next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == "predict")


def full(stores: dict | None, names) -> bool:
    """Every named store at its bound (the probe's "bounds"; a store this server does not have,
    or whose bound it does not know, is not waited for)."""
    if not stores or "bounds" not in stores:
        return False
    known = [n for n in names if stores.get(n) is not None and stores["bounds"].get(n)]
    return all(stores[n] >= stores["bounds"][n] for n in known)


def fill_stores(served) -> dict:
    """Joins, then empty uploads, from fresh addresses until the stores are full (or FILL_S has
    passed): requests sent, seconds, and the stores before and after."""
    start, before = time.monotonic(), wait_for_probe(served)
    fn = predict_fn(served.url)
    fresh = itertools.count()  # next() is atomic: one address per request, across threads
    sent = {"joins": Counter(), "uploads": Counter()}

    def join(http):
        i = next(fresh)
        body = {"data": [None, "mnist"], "fn_index": fn, "session_hash": f"fill{i:x}"}
        headers = {"X-Forwarded-For": address(i), "Content-Type": "application/json"}
        r = http.post("/gradio_api/queue/join", content=json.dumps(body), headers=headers)
        if r.status_code == 503:  # the queue is full: let it drain
            time.sleep(0.2)
        sent["joins"].add()

    def upload(http):
        http.post(
            "/gradio_api/upload", content=b"", headers={"X-Forwarded-For": address(next(fresh))}
        )
        sent["uploads"].add()

    for send, names in ((join, JOIN_STORES), (upload, ("rate_buckets",))):
        until(served, names, send, start + FILL_S)
    filled = time.monotonic()
    after = settle(served)
    return {
        "seconds": round(filled - start, 1),
        "settled_s": round(time.monotonic() - filled, 1),
        **{kind: n() for kind, n in sent.items()},
        "full": full(after, [*JOIN_STORES, "rate_buckets"]),
        "stores_before": before,
        "stores_after": after,
    }


def until(served, names, send, deadline: float) -> None:
    """send(http) from THREADS threads, each with its own client, until the named stores are
    full or the deadline passes."""
    import httpx

    done = threading.Event()

    def worker():
        with httpx.Client(base_url=served.url, timeout=60) as http:
            while not done.is_set():
                send(http)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for th in threads:
        th.start()
    while not full(served.stores(), names) and time.monotonic() < deadline:
        time.sleep(0.5)
    done.set()
    for th in threads:
        th.join()


def settle(served, timeout: float = SETTLE_S) -> dict | None:
    """Wait for the fill's own traffic to end in the server: its events answered, and the
    reservations of its refused uploads released (a refused upload stays charged to its address
    for two sweeps: thousands of addresses at once fill the temp dir's file slots, and honest
    uploads would get 507 for those seconds, as from any many-address flood). The stores then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stores = served.stores()
        if stores and not stores.get("events") and not stores.get("disk_owners"):
            return stores
        time.sleep(0.5)
    return served.stores()


def wait_for_probe(served, timeout: float = 30.0) -> dict:
    """The server's first probe of its stores."""
    deadline = time.monotonic() + timeout
    while (stores := served.stores()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the server wrote no probe of its stores")
        time.sleep(0.2)
    return stores
