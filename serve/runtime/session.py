"""onnxruntime sessions made one way everywhere (export's checks, the predictor, benchmarks).

No JAX; onnxruntime is imported when a session is made, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable


def session_options(threads: int = 1):
    """CPU options: `threads` intra-op threads, one inter-op thread, sequential, errors only.

    A fixed thread count makes timings and results repeatable (0: onnxruntime's default, all
    cores).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no optimizer chatter on stderr
    return options


def session(model, threads: int = 1):
    """An onnxruntime CPU session over a model path or its bytes, with session_options(threads).

    Raises whatever onnxruntime raises for a model it cannot load (its own exception types).
    """
    import onnxruntime as ort

    model = os.fspath(model) if isinstance(model, os.PathLike) else model
    # On a ValueError or RuntimeError (a name that is not UTF-8, say) onnxruntime prints an
    # "EP Error ... Falling back" banner on stdout and retries on the same CPU provider: stdout
    # belongs to `flaxdigits predict --json`. Sessions are made at start-up, so redirecting the
    # process's stdout for the moment costs nothing.
    with contextlib.redirect_stdout(io.StringIO()):
        sess = ort.InferenceSession(
            model, session_options(threads), providers=["CPUExecutionProvider"]
        )
    sess.disable_fallback()  # nor print and retry when a run fails
    return sess


def time_calls(call: Callable[[], object], blocks: int = 7, block_seconds: float = 0.2):
    """Seconds per call in each of `blocks` timed blocks of about block_seconds each (3 warm-up
    calls first, then one timed call to size the blocks)."""
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
