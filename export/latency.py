"""Speed of exported files in onnxruntime (CPU): milliseconds per call by batch size and threads.

Kept out of the manifest (timings differ run to run; the manifest is byte-for-byte repeatable)
and out of the tests. Usage: flaxdigits benchmark models/*.onnx
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.core import contract
from flaxdigits.serve.runtime import session as onnxrt


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
            sess = onnxrt.session(Path(path), threads=n_threads)
            for batch in batch_sizes:
                x = rng.random((batch, 28, 28, 1), dtype=np.float32)
                call = functools.partial(sess.run, None, {contract.INPUT_NAME: x})
                per_call = onnxrt.time_calls(call, blocks, block_seconds)
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


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of benchmark rows."""
    lines = [f"{'file':<18} {'threads':>7} {'batch':>6} {'ms':>9} {'best ms':>9} {'img/s':>9}"]
    for r in rows:
        lines.append(
            f"{r['file']:<18} {r['threads']:>7} {r['batch']:>6} {r['ms']:>9.3f} "
            f"{r['ms_best']:>9.3f} {r['images_per_s']:>9}"
        )
    return "\n".join(lines)
