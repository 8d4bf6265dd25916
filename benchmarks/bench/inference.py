"""Inference benchmarks: onnxruntime latency and throughput per model file, a drawn canvas through
preprocessing and both models, and the predictor process's cold start and peak memory."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from flaxdigits.core import contract
from flaxdigits.serve.runtime import session as onnxrt

ROOT = Path(__file__).resolve().parents[2]


def percentiles(times_s: list[float]) -> dict:
    ms = np.asarray(times_s) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def inference_bench(models_dir: Path, mnist, runs: int) -> dict:
    """onnxruntime batch-1 latency (1 thread) and batch-256 throughput, float and int8."""

    out = {}
    x = contract.to_model_input(mnist.test_images)
    for path in sorted(models_dir.glob("*.onnx")):
        res = {"bytes": path.stat().st_size}
        for threads in (1, 2):
            sess = onnxrt.session(path, threads=threads)
            for _ in range(20):
                sess.run(None, {"image": x[:1]})
            times = []
            for i in range(runs):
                t = time.perf_counter()
                sess.run(None, {"image": x[i % 10000 : i % 10000 + 1]})
                times.append(time.perf_counter() - t)
            batch_times = []
            for i in range(5):
                t = time.perf_counter()
                sess.run(None, {"image": x[i * 256 : (i + 1) * 256]})
                batch_times.append(time.perf_counter() - t)
            res[f"threads{threads}"] = {
                "batch1": percentiles(times),
                "batch256_images_per_second": 256 / statistics.median(batch_times),
            }
        out[path.name] = res
    return out


def canvas_bench(models_dir: Path, mnist, runs: int) -> dict:
    """Preprocessing per 800x800 canvas, and canvas -> both predictions end to end."""
    from PIL import Image

    from flaxdigits.serve.runtime.predictor import Predictor
    from flaxdigits.serve.runtime.preprocess import preprocess

    digit = Image.fromarray(255 - mnist.test_images[0]).resize((560, 560), Image.BILINEAR)
    canvas = Image.new("L", (800, 800), 255)
    canvas.paste(digit, (120, 120))
    canvas = np.asarray(canvas.convert("RGB"))  # (800, 800, 3) dark ink on white
    predictors = [Predictor(models_dir / f"{n}.onnx") for n in contract.MODEL_NAMES]
    res = {}
    for method in contract.PREPROCESS_METHODS:
        pre, e2e = [], []
        for _ in range(runs):
            t = time.perf_counter()
            p = preprocess(canvas, method)
            pre.append(time.perf_counter() - t)
            for predictor in predictors:
                predictor.predict(p.image)
            e2e.append(time.perf_counter() - t)
        res[method] = {"preprocess": percentiles(pre), "canvas_to_both": percentiles(e2e)}
    return res


def process_bench(models_dir: Path, runs: int = 3) -> dict:
    """Predictor cold start (import + both sessions) and peak RSS, with/without gradio."""
    out = {}
    for gradio in (False, True):
        argv = [sys.executable, "-m", "benchmarks.bench.cold_start", str(models_dir.resolve())]
        results = []
        for _ in range(runs):
            proc = subprocess.run(  # noqa: S603 - our own interpreter and program
                argv + (["--gradio"] if gradio else []),
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            )
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        out["with_gradio" if gradio else "predictor_only"] = {
            "cold_start_s": statistics.median(r["cold_start_s"] for r in results),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in results),
            "jax_imported": any(r["jax_imported"] for r in results),
        }
    return out
