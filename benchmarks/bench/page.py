"""The drawing page's round trip through gradio_client on loopback, 1 and 8 clients at once."""

from __future__ import annotations

import concurrent.futures
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.support.ports import on_free_port


def _drawings(folder: Path, mnist, n: int = 8) -> list[str]:
    """n MNIST test digits as 400x400 dark-on-white PNG files."""
    from PIL import Image

    files = []
    for i in range(n):
        path = folder / f"digit{i}.png"
        Image.fromarray(255 - mnist.test_images[i]).resize((400, 400)).save(path)
        files.append(str(path))
    return files


def _round_trips(url: str, files: list[str], clients: int, requests: int) -> dict:
    """requests // clients predictions from each of `clients` clients at once: p50 and p95."""
    from gradio_client import Client, handle_file

    conns = [Client(url, verbose=False) for _ in range(clients)]

    def worker(k: int) -> list[float]:
        times = []
        for j in range(requests // clients):
            t = time.perf_counter()
            conns[k].predict(handle_file(files[(k + j) % 8]), "mnist", api_name="/predict")
            times.append(time.perf_counter() - t)
        return times

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        times = [t for ts in pool.map(worker, range(clients)) for t in ts]
    ms = np.asarray(times) * 1000
    return {
        "requests": len(times),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


def page_bench(models_dir: Path, mnist, requests: int) -> dict:
    """Round trip through gradio_client: p50/p95 with 1 and 8 concurrent clients (loopback)."""
    import gradio_client  # noqa: F401 - an ImportError here marks the page benchmark skipped

    from flaxdigits.serve.page.app import launch

    _, server = on_free_port(
        lambda port: launch(models_dir, host="127.0.0.1", port=port, block=False)
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = _drawings(Path(tmp), mnist)
            return {
                f"clients{clients}": _round_trips(server.local_url, files, clients, requests)
                for clients in (1, 8)
            }
    finally:
        server.close()
