"""Issue 34's temp-dir findings: 1 (unread uploads held for good), 2 (empty file parts and stray
files) and 6 (Content-Length beside chunked, near a full temp dir)."""

from __future__ import annotations

import os
import threading
import time
import urllib.request

import numpy as np

from benchmarks.soak.sampling import settle
from benchmarks.soak.wire import MIB, count, multipart, send_then_body, status_of, transport_errors
from flaxdigits.serve.page import budgets

MULTIPART = {"Content-Type": "multipart/form-data; boundary=b"}


def upload(http, name: str, data: bytes, address: str | None = None):
    headers = {"X-Forwarded-For": address} if address else {}
    return http.post(
        "/gradio_api/upload", files={"files": (name, data, "image/png")}, headers=headers
    )


def row_leases(page, http) -> dict:
    """1: 10 MiB uploads from one address that nothing reads; then anyone's upload."""
    big = os.urandom(10 * MIB - 4096)
    t, codes = time.perf_counter(), []
    for i in range(40):
        codes.append(upload(http, f"big{i}.png", big, "203.0.113.1").status_code)
        if codes[-1] != 200:
            break
    filled_s = time.perf_counter() - t
    filled_mib = round(page.temp_files()[1] / MIB, 1)
    photo = os.urandom(8 * MIB)  # another visitor's photo of a digit
    other = upload(http, "photo.png", photo, "203.0.113.2").status_code
    honest = page.honest("203.0.113.3")
    t0, again = time.perf_counter(), None
    while time.perf_counter() - t0 < 150:
        if upload(http, "photo.png", photo, "203.0.113.1").status_code == 200:
            again = round(time.perf_counter() - t0, 1)
            break
        time.sleep(5)
    return {
        "row": "1: 10 MiB uploads from one address, never read",
        "first_address": count(codes),
        "seconds": round(filled_s, 1),
        "temp_dir_mib": filled_mib,
        "another_address_8mib_upload": other,
        "honest_predict": honest,
        "first_address_8mib_accepted_again_after_s": again if again is not None else "> 150",
    }


def row_empty_parts(page, http, requests: int = 200) -> dict:
    """2: uploads of 1,000 empty file parts each; then how every route fares."""
    rss0 = settle(page.pid)
    files0 = page.temp_files()[0]
    codes, t = [], time.perf_counter()
    for j in range(requests):
        body = multipart([("files", f"r{j}e{i}.png", b"") for i in range(1000)])
        headers = {**MULTIPART, "X-Forwarded-For": f"203.0.113.{10 + j % 100}"}
        try:
            codes.append(http.post("/gradio_api/upload", content=body, headers=headers).status_code)
        except transport_errors() as e:
            codes.append(type(e).__name__)
        if time.perf_counter() - t > 300:
            break
    sent_s = time.perf_counter() - t
    files_after = page.temp_files()[0]
    small = os.urandom(10_000)
    times = []
    for i in range(5):
        t1 = time.perf_counter()
        upload(http, f"s{i}.png", small, "203.0.113.200")
        times.append(time.perf_counter() - t1)
    get_wait = get_behind_uploads(page, small)
    strays = stray_fields(page, http)
    return {
        "row": f"2: {len(codes)} uploads of 1,000 empty file parts",
        "status": count(codes),
        "seconds": round(sent_s, 1),
        "new_files": files_after - files0,
        "upload_10kb_s": round(float(np.median(times)), 3),
        "get_behind_20_uploads_s": round(get_wait, 2),
        "rss_growth_mib": round(settle(page.pid, 5) - rss0, 1),
        **strays,
    }


def get_behind_uploads(page, small: bytes) -> float:
    """Seconds a GET / waits while 20 tiny uploads are in flight."""
    import httpx

    def one(i):
        with httpx.Client(base_url=page.url, timeout=120) as h:
            upload(h, f"g{i}.png", small, f"198.18.0.{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for th in threads:
        th.start()
    time.sleep(0.5)  # the uploads connected and sent
    t = time.perf_counter()
    with urllib.request.urlopen(page.url, timeout=120):  # noqa: S310 - loopback
        waited = time.perf_counter() - t
    for th in threads:
        th.join()
    return waited


def stray_fields(page, http) -> dict:
    """2b: 20 uploads with a file part in a field not named `files`: files left at the top."""

    def top():
        # The page's dir: flaxdigits-serve-*/ of older checkouts, flaxdigits-serve-*/page-*/ now.
        dirs = [
            d for d in os.scandir(page.tmp) if d.is_dir() and d.name.startswith("flaxdigits-serve-")
        ]
        dirs += [
            p for d in dirs for p in os.scandir(d.path) if p.is_dir() and p.name.startswith("page-")
        ]
        found = {e.name for e in os.scandir(page.tmp) if e.is_file()}
        return found | {
            f"{os.path.relpath(d.path, page.tmp)}/{e.name}"
            for d in dirs
            for e in os.scandir(d.path)
            if e.is_file()
        }

    before = top()
    codes = []
    for i in range(20):
        body = multipart([("other", f"o{i}.png", os.urandom(1000))])
        codes.append(http.post("/gradio_api/upload", content=body, headers=MULTIPART).status_code)
    time.sleep(10)
    return {"other_field_status": count(codes), "other_field_files_left": len(top() - before)}


def chunked(body: bytes, size: int = 65536) -> bytes:
    """body in chunked transfer coding, size bytes a chunk."""
    chunks = (body[i : i + size] for i in range(0, len(body), size))
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def row_te_and_cl(page, http) -> dict:
    """6: Content-Length: 1 with Transfer-Encoding: chunked, 10 at once, near a full temp dir."""
    fill = os.urandom(10 * MIB - 4096)
    # ~240 MiB of unread uploads from 8 addresses, as the issue had
    filled = [
        upload(http, f"fill{i}.png", fill, f"203.0.113.{60 + i // 3}").status_code
        for i in range(24)
    ]
    chunks = chunked(multipart([("files", "smuggled.png", os.urandom(10 * MIB - 4096))]))
    head = (
        b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"
    )
    codes = []

    def one(i):
        address = f"X-Forwarded-For: 203.0.113.{80 + i}\r\n\r\n".encode()
        try:
            codes.append(status_of(send_then_body(page.port, head + address, chunks)))
        except OSError as e:
            codes.append(type(e).__name__)

    peak = peak_while(page, lambda: all_at_once(one, 10))
    return {
        "row": "6: Content-Length: 1 + Transfer-Encoding: chunked, 10 x 10 MiB at once",
        "prefill": count(filled),
        "status": count(codes),
        "temp_dir_peak_mb": round(peak / 1e6, 1),
        "budget_mb": round(budgets.TEMP_DIR_BYTES / 1e6, 1),
        "honest_predict": page.honest("203.0.113.99"),
    }


def all_at_once(one, n: int) -> None:
    """one(0) ... one(n - 1), each in a thread, all started before any is joined."""
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def peak_while(page, work, every: float = 0.1) -> int:
    """The most bytes in the server's temp dir while work() runs (and 1 s after)."""
    peak = [page.temp_files()[1]]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak.append(page.temp_files()[1])
            time.sleep(every)

    sampler = threading.Thread(target=sample)
    sampler.start()
    work()
    time.sleep(1)
    done.set()
    sampler.join()
    return max(peak)
