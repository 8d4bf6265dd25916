"""The predictor's cold start in a fresh interpreter, for process_bench: import (with gradio
first when asked) and both models' sessions, then one prediction each; peak RSS; whether JAX
came in. Prints one JSON line.

    python -m benchmarks.bench.cold_start MODELS_DIR [--gradio]
"""

from __future__ import annotations

import json
import sys
import time


def cold_start(models_dir: str, gradio: bool) -> dict:
    start = time.perf_counter()
    if gradio:
        import gradio  # noqa: F401
    from flaxdigits.serve.runtime.predictor import Predictor

    predictors = [Predictor(models_dir + "/mlp.onnx"), Predictor(models_dir + "/cnn.onnx")]
    cold = time.perf_counter() - start
    import numpy as np

    for p in predictors:
        p.predict(np.zeros((28, 28), np.float32))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the (large) parent.
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:")).split()[1]
    return {
        "cold_start_s": cold,
        "peak_rss_mib": int(hwm) / 1024,
        "jax_imported": "jax" in sys.modules,
    }


if __name__ == "__main__":
    print(json.dumps(cold_start(sys.argv[1], "--gradio" in sys.argv[2:])))
