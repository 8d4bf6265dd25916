"""Speed of exported files in onnxruntime (CPU): milliseconds per call by batch size and threads.

Kept out of the manifest (timings differ run to run; the manifest is byte-for-byte repeatable)
and out of the tests. Usage: python -m flaxdigits.export.benchmark models/*.onnx
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.export.onnx_export import session
from flaxdigits.serve import spec


def benchmark(
    paths: Sequence[Path],
    batch_sizes: Sequence[int] = (1, 256),
    threads: Sequence[int] = (1, 2),
    *,
    blocks: int = 7,
    block_seconds: float = 0.2,
) -> list[dict[str, Any]]:
    """Median and best ms per session.run of each file, for each thread count and batch size."""
    rng = np.random.default_rng(0)
    rows = []
    for path in paths:
        for n_threads in threads:
            sess = session(Path(path), threads=n_threads)
            for batch in batch_sizes:
                x = rng.random((batch, 28, 28, 1), dtype=np.float32)
                call = functools.partial(sess.run, None, {spec.INPUT_NAME: x})
                per_call = _time_calls(call, blocks, block_seconds)
                median = statistics.median(per_call) * 1e3
                rows.append(
                    {
                        "file": Path(path).name,
                        "threads": n_threads,
                        "batch": batch,
                        "ms": round(median, 4),
                        "ms_best": round(min(per_call) * 1e3, 4),
                        "images_per_s": round(batch / median * 1e3),
                    }
                )
    return rows


def _time_calls(call, blocks: int, block_seconds: float) -> list[float]:
    """Seconds per call in each of `blocks` timed blocks of about block_seconds each."""
    for _ in range(3):
        call()
    start = time.perf_counter()
    call()
    n = max(1, int(block_seconds / max(time.perf_counter() - start, 1e-6)))
    out = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(n):
            call()
        out.append((time.perf_counter() - start) / n)
    return out


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of benchmark rows."""
    lines = [f"{'file':<18} {'threads':>7} {'batch':>6} {'ms':>9} {'best ms':>9} {'img/s':>9}"]
    for r in rows:
        lines.append(
            f"{r['file']:<18} {r['threads']:>7} {r['batch']:>6} {r['ms']:>9.3f} "
            f"{r['ms_best']:>9.3f} {r['images_per_s']:>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark table for the given .onnx files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    print(format_rows(benchmark(args.models, args.batch, args.threads)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
