"""Honest clients: gradio_client predicting drawings, each answer compared with the offline
predictor's (digit equal, probabilities within 2e-6)."""

from __future__ import annotations

import random
import time

TIMEOUT = 120.0  # every HTTP call of an honest request, as in loadtest
TOLERANCE = 2e-6


def same_answer(result: dict, want: dict) -> bool:
    """The page's answer equals the offline predictor's for every model."""
    for name, p in want.items():
        got = result["models"][name]
        if got["digit"] != p.digit:
            return False
        gaps = (abs(a - b) for a, b in zip(got["probabilities"], p.probabilities, strict=True))
        if max(gaps) > TOLERANCE:
            return False
    return True


def honest_client(url, files, answers, address, stop, counter, out):
    """Predict drawings until stop; record (latency, correct) per request."""
    import httpx
    from gradio_client import Client, handle_file

    client = Client(
        url,
        verbose=False,
        headers={"X-Forwarded-For": address},
        httpx_kwargs={"timeout": httpx.Timeout(TIMEOUT)},
    )
    rng = random.Random(address)  # noqa: S311 - a seeded simulation, not a secret
    while not stop():
        path = rng.choice(files)
        t = time.perf_counter()
        try:
            result = client.predict(image=handle_file(str(path)), api_name="/predict")
        except Exception as e:  # noqa: BLE001 - every failure is counted and shown
            out.append({"error": f"{type(e).__name__}: {e}"[:200]})
            counter.add(2)
            continue
        latency = time.perf_counter() - t
        out.append({"latency": latency, "correct": same_answer(result, answers[str(path)])})
        counter.add(2)  # the upload and the queue join
