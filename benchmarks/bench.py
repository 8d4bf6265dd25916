"""`make bench`: training, inference, page and process benchmarks -> JSON + BENCHMARKS.md.

Not a test: it measures and writes down. Medians of >= 3 runs; compile time reported apart.
Usage: python -m benchmarks.bench [--quick] [--no-peer] [--models models] [--out benchmarks]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from flaxdigits.core import contract
from flaxdigits.core.atomic import write_json_atomic, write_text_atomic
from flaxdigits.serve.runtime import session as onnxrt

SEED_TARGETS = {"mlp": 0.977, "cnn": 0.986}  # the seed's 5-epoch test accuracies


def machine() -> dict:
    """CPU model, cores, memory, accelerators, library versions and date."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "optax", "onnxruntime", "jax2onnx", "gradio", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    devices = jax.devices()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1) if mem else None,
        "accelerator": None
        if devices[0].platform == "cpu"
        else f"{len(devices)} x {devices[0].device_kind}",
        "python": platform.python_version(),
        "versions": versions,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """This machine's float32 matmul rate through XLA (median of repeats), GFLOP/s.

    main() samples it before every training benchmark and takes the best sample: on a shared
    (virtual) machine the rate swings ~20% with the neighbours' load, and the best rate gives
    the lowest floor, so the ratio to it is the strict one.
    """
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def train_bench(mnist, name: str, batch: int, epochs: int) -> dict:
    """flaxdigits training: per-epoch seconds (median), compile, test accuracy per epoch."""
    from flaxdigits.training.config import TrainConfig
    from flaxdigits.training.train import train

    cfg = TrainConfig(model=name, epochs=epochs, batch_size=batch)
    with tempfile.TemporaryDirectory() as tmp:
        m = train(
            cfg,
            Path(tmp) / "run",
            data=mnist,
            progress=False,
            log=lambda _: None,
            snapshot_epochs=range(1, epochs + 1),
        )
    secs = [h["seconds"] for h in m["history"]]  # training: shuffle + steps
    val_secs = [h["val_seconds"] for h in m["history"]]  # the 6,000-image validation pass
    acc = [m["snapshots"][str(e)]["test_accuracy"] for e in range(1, epochs + 1)]
    median = statistics.median(secs)
    out = {
        "seconds_per_epoch": median,
        "epoch_seconds": secs,
        "validation_seconds_per_epoch": statistics.median(val_secs),
        "validation_seconds": val_secs,
        "images_per_second": 54_000 // batch * batch / median,
        "compile_seconds": m["compile_seconds"],
        "test_accuracy_per_epoch": acc,
    }
    target = SEED_TARGETS[name]
    reached = next((i for i, a in enumerate(acc) if a >= target), None)
    out["seconds_to_seed_accuracy"] = None if reached is None else sum(secs[: reached + 1])
    out["epochs_to_seed_accuracy"] = None if reached is None else reached + 1
    return out


def peer_bench(mnist, name: str, batch: int, epochs: int) -> dict | None:
    """The PyTorch reference, if torch is installed."""
    try:
        from benchmarks import torch_peer
    except ImportError:
        return None
    try:
        r = torch_peer.train_epochs(name, mnist, batch, epochs, threads=os.cpu_count() or 1)
    except ImportError:
        return None
    return {
        "seconds_per_epoch": statistics.median(r["seconds"]),
        "epoch_seconds": r["seconds"],
        "test_accuracy": r["test_accuracy"],
        "torch": r["torch"],
    }


def _percentiles(times_s: list[float]) -> dict:
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
                "batch1": _percentiles(times),
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
    for method in ("mnist", "seed"):
        pre, e2e = [], []
        for _ in range(runs):
            t = time.perf_counter()
            p = preprocess(canvas, method)
            pre.append(time.perf_counter() - t)
            for predictor in predictors:
                predictor.predict(p.image)
            e2e.append(time.perf_counter() - t)
        res[method] = {"preprocess": _percentiles(pre), "canvas_to_both": _percentiles(e2e)}
    return res


_COLD = """
import json, sys, time
t = time.perf_counter()
if {gradio}:
    import gradio  # noqa: F401
from flaxdigits.serve.runtime.predictor import Predictor
ps = [Predictor(sys.argv[1] + "/mlp.onnx"), Predictor(sys.argv[1] + "/cnn.onnx")]
cold = time.perf_counter() - t
import numpy as np
for p in ps:
    p.predict(np.zeros((28, 28), np.float32))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec from the (large) parent.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({{"cold_start_s": cold, "peak_rss_mib": int(hwm) / 1024,
    "jax_imported": "jax" in sys.modules}}))
"""


def process_bench(models_dir: Path, runs: int = 3) -> dict:
    """Predictor cold start (import + both sessions) and peak RSS, with/without gradio."""
    out = {}
    for gradio in (False, True):
        results = []
        for _ in range(runs):
            proc = subprocess.run(  # noqa: S603 - our own interpreter and script
                [sys.executable, "-c", _COLD.format(gradio=gradio), str(models_dir)],
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


def page_bench(models_dir: Path, mnist, requests: int) -> dict:
    """Round trip through gradio_client: p50/p95 with 1 and 8 concurrent clients (loopback)."""
    from gradio_client import Client, handle_file
    from loadtest import free_port
    from PIL import Image

    from flaxdigits.serve.page.app import launch

    server = launch(models_dir, host="127.0.0.1", port=free_port(), block=False)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            files = []
            for i in range(8):
                path = Path(tmp) / f"digit{i}.png"
                img = Image.fromarray(255 - mnist.test_images[i]).resize((400, 400))
                img.save(path)
                files.append(str(path))
            out = {}
            for clients in (1, 8):
                conns = [Client(server.local_url, verbose=False) for _ in range(clients)]

                def worker(k, conns=conns, clients=clients):
                    times = []
                    for j in range(requests // clients):
                        t = time.perf_counter()
                        conns[k].predict(
                            handle_file(files[(k + j) % 8]), "mnist", api_name="/predict"
                        )
                        times.append(time.perf_counter() - t)
                    return times

                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    times = [t for ts in pool.map(worker, range(clients)) for t in ts]
                ms = np.asarray(times) * 1000
                out[f"clients{clients}"] = {
                    "requests": len(times),
                    "p50_ms": float(np.percentile(ms, 50)),
                    "p95_ms": float(np.percentile(ms, 95)),
                }
            return out
    finally:
        server.close()


def main(argv=None) -> int:
    """Run the benchmarks and write JSON + markdown."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs/runs (smoke run)")
    ap.add_argument("--no-peer", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--models", default="models")
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("--markdown", default="BENCHMARKS.md")
    ap.add_argument("--runs", default="runs", help="trained runs (the robust CNN's time to 99%%)")
    args = ap.parse_args(argv)
    from flaxdigits.data.mnist import load_mnist
    from flaxdigits.models import train_flops_per_image

    mnist = load_mnist()
    epochs = 3 if args.quick else 10
    results: dict = {"machine": machine(), "training": {}, "peer": {}}
    rates = []
    for name in contract.MODEL_NAMES:
        for batch in (32, 128, 1024):
            rates.append(matmul_gflops())
            n_epochs = epochs if batch == 32 else 3
            print(f"training {name} batch {batch} ({n_epochs} epochs)", flush=True)
            results["training"][f"{name}/{batch}"] = train_bench(mnist, name, batch, n_epochs)
            if not args.no_peer and batch in (32, 128, 1024):
                print(f"peer {name} batch {batch}", flush=True)
                peer = peer_bench(mnist, name, batch, 3)
                if peer:
                    results["peer"][f"{name}/{batch}"] = peer
    from benchmarks import augment_cost

    print("augmentation cost (robust recipe)", flush=True)
    results["augmentation"] = augment_cost.costs(mnist, 4 if args.quick else 12)
    results["robust_cnn_time_to_99"] = augment_cost.time_to_accuracy(
        Path(args.runs) / "robust" / "cnn", 0.990
    )
    rates.append(matmul_gflops())
    rate = max(rates)
    results["floor"] = {"matmul_gflops": rate, "matmul_gflops_samples": rates}
    for name in contract.MODEL_NAMES:
        epoch_flops = train_flops_per_image(name) * 54_000
        floor_s = epoch_flops / (rate * 1e9)
        measured = results["training"][f"{name}/32"]["seconds_per_epoch"]
        results["floor"][name] = {
            "train_flops_per_epoch": epoch_flops,
            "floor_seconds_per_epoch": floor_s,
            "measured_over_floor_b32": measured / floor_s,
            "measured_over_floor_b128": results["training"][f"{name}/128"]["seconds_per_epoch"]
            / floor_s,
        }
    models_dir = Path(args.models)
    runs = 200 if args.quick else 2000
    if (models_dir / "cnn.onnx").exists() and (models_dir / "mlp.onnx").exists():
        print("inference", flush=True)
        results["inference"] = inference_bench(models_dir, mnist, runs)
        results["canvas"] = canvas_bench(models_dir, mnist, 20 if args.quick else 100)
        results["process"] = process_bench(models_dir)
        try:
            results["page"] = page_bench(models_dir, mnist, 16 if args.quick else 160)
        except ImportError as e:
            results["page"] = {"skipped": str(e)}
    else:
        print(f"no models in {models_dir}: run `make export` for the inference benchmarks")
    out = Path(args.out)
    write_json_atomic(out / "results.json", results)
    write_text_atomic(args.markdown, to_markdown(results))
    print(f"wrote {out / 'results.json'} and {args.markdown}")
    return 0


def to_markdown(r: dict) -> str:
    """BENCHMARKS.md from the results dict."""
    m = r["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"accelerator: {m['accelerator'] or 'none'}; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f". Date {m['date']}. Produced by `make bench` (benchmarks/bench.py); raw numbers in "
        "benchmarks/results.json.",
        "",
        "## Training (54,000 training images per epoch; medians over epochs; compile apart)",
        "",
        "s/epoch is the epoch's training (shuffle and steps), the span the PyTorch reference "
        "times too; the 6,000-image validation pass after each epoch is timed apart.",
        "",
        "| Model | Batch | s/epoch | images/s | validation s | compile s | PyTorch s/epoch "
        "| vs PyTorch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, t in r["training"].items():
        name, batch = key.split("/")
        peer = r["peer"].get(key)
        ps = f"{peer['seconds_per_epoch']:.2f}" if peer else "n/a"
        ratio = f"{peer['seconds_per_epoch'] / t['seconds_per_epoch']:.2f}×" if peer else "n/a"
        lines.append(
            f"| {name.upper()} | {batch} | {t['seconds_per_epoch']:.2f} | "
            f"{t['images_per_second']:,.0f} | {t['validation_seconds_per_epoch']:.2f} | "
            f"{t['compile_seconds']:.2f} | {ps} | {ratio} |"
        )
    lines += ["", "Time to the seed's 5-epoch test accuracy (batch 32, training time only):", ""]
    for name in contract.MODEL_NAMES:
        t = r["training"][f"{name}/32"]
        target = SEED_TARGETS[name]
        if t["seconds_to_seed_accuracy"] is None:
            best = max(t["test_accuracy_per_epoch"])
            lines.append(
                f"- {name.upper()}: {target:.1%} not reached in "
                f"{len(t['test_accuracy_per_epoch'])} epochs (best {best:.2%})"
            )
        else:
            lines.append(
                f"- {name.upper()}: {target:.1%} after {t['epochs_to_seed_accuracy']} epochs, "
                f"{t['seconds_to_seed_accuracy']:.1f} s"
            )
    f = r["floor"]
    lines += [
        "",
        "## Compute floor",
        "",
        f"float32 matmul rate (XLA, 1024×1024): {f['matmul_gflops']:.1f} GFLOP/s, the best of "
        f"{len(f['matmul_gflops_samples'])} samples taken through the run (median "
        f"{statistics.median(f['matmul_gflops_samples']):.1f}). "
        "Training FLOPs per epoch = 54,000 × (forward FLOPs + the backward products training "
        "needs: all weight gradients, activation gradients of all layers but the first; "
        "`flaxdigits.models.train_flops_per_image`).",
        "",
        "| Model | FLOPs/epoch | floor s/epoch | median/floor b32 | fastest epoch/floor b32 "
        "| median/floor b128 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in contract.MODEL_NAMES:
        g = f[name]
        fastest = min(r["training"][f"{name}/32"]["epoch_seconds"])
        lines.append(
            f"| {name.upper()} | {g['train_flops_per_epoch'] / 1e9:.1f} G | "
            f"{g['floor_seconds_per_epoch']:.2f} | {g['measured_over_floor_b32']:.2f}× | "
            f"{fastest / g['floor_seconds_per_epoch']:.2f}× | "
            f"{g['measured_over_floor_b128']:.2f}× |"
        )
    spread = r["training"]["cnn/32"]["epoch_seconds"]
    lines += [
        "",
        f"CNN batch-32 epochs in this run: {min(spread):.2f}–{max(spread):.2f} s; matmul-rate "
        f"samples {min(f['matmul_gflops_samples']):.0f}–"
        f"{f['matmul_gflops']:.0f} GFLOP/s (a shared virtual machine: the neighbours' load moves "
        "both).",
    ]
    if not m["accelerator"]:
        lines += [
            "",
            "## Accelerators",
            "",
            "No GPU or TPU in this run. The same command on a GPU machine (JAX's CUDA wheels) "
            "fills the training tables for it; nothing in the training code is CPU-specific.",
        ]
    if "inference" in r:
        lines += [
            "",
            "## Inference (onnxruntime, CPU)",
            "",
            "| File | bytes | threads | batch-1 p50 ms | batch-1 p99 ms | batch-256 images/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for file, res in r["inference"].items():
            for threads in (1, 2):
                t = res[f"threads{threads}"]
                lines.append(
                    f"| {file} | {res['bytes']:,} | {threads} | {t['batch1']['p50_ms']:.3f} | "
                    f"{t['batch1']['p99_ms']:.3f} | {t['batch256_images_per_second']:,.0f} |"
                )
        lines += ["", "| Canvas 800×800 | preprocess p50 ms | canvas → both models p50 ms |"]
        lines += ["|---|---:|---:|"]
        lines += [
            f"| {method} | {c['preprocess']['p50_ms']:.2f} | {c['canvas_to_both']['p50_ms']:.2f} |"
            for method, c in r["canvas"].items()
        ]
        lines += ["", "| Predictor process | cold start s | peak RSS MiB | JAX imported |"]
        lines += ["|---|---:|---:|---|"]
        for k, p in r["process"].items():
            row = f"| {k} | {p['cold_start_s']:.2f} | {p['peak_rss_mib']:.0f} | "
            lines.append(row + f"{p['jax_imported']} |")
    if "process" in r:
        page = r.get("page", {})
        if "clients1" in page:
            lines += ["", "| Page via gradio_client | requests | p50 ms | p95 ms |"]
            lines += ["|---|---:|---:|---:|"]
            for k, p in page.items():
                lines.append(f"| {k} | {p['requests']} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} |")
    if "augmentation" in r:
        lines += [
            "",
            "## On-device augmentation (robust recipe)",
            "",
            "Median ms per training step at the recipe's batch, with and without its distortions "
            "(benchmarks/augment_cost.py; the two compiled loops timed call by call in turn).",
            "",
            "| Model | ms/step augmented | ms/step plain | augmentation share of the step |",
            "|---|---:|---:|---:|",
        ]
        for name, a in r["augmentation"].items():
            lines.append(
                f"| {name.upper()} | {a['ms_per_step_augmented']:.2f} | "
                f"{a['ms_per_step_plain']:.2f} | {100 * a['augmentation_share_of_step']:.0f}% |"
            )
    reached = r.get("robust_cnn_time_to_99")
    if reached and reached.get("epochs"):
        lines += [
            "",
            f"The robust CNN's test accuracy (its per-epoch curve) first reached 99.0% after epoch "
            f"{reached['epochs']} of {reached['of_epochs']}: {reached['training_seconds']} s of "
            f"training of {reached['run_training_seconds']} s.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
