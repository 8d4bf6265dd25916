"""The command: arguments, the benchmarks in order, results.json and the markdown page."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import benchmarks.bench
from benchmarks.bench import training
from benchmarks.bench.inference import canvas_bench, inference_bench, process_bench
from benchmarks.bench.machine import machine
from benchmarks.bench.markdown import to_markdown
from benchmarks.bench.page import page_bench
from flaxdigits.core.atomic import write_json_atomic, write_text_atomic


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.bench", description=benchmarks.bench.__doc__.splitlines()[0]
    )
    ap.add_argument("--quick", action="store_true", help="fewer epochs/runs (smoke run)")
    ap.add_argument("--no-peer", action="store_true", help="skip the PyTorch reference")
    ap.add_argument("--models", default="models")
    ap.add_argument("--out", default="benchmarks")
    ap.add_argument("--markdown", default="BENCHMARKS.md")
    ap.add_argument("--runs", default="runs", help="trained runs (the robust CNN's time to 99%%)")
    ap.add_argument(
        "--rewrite",
        action="store_true",
        help="measure nothing: write the markdown again from OUT/results.json",
    )
    return ap


def serving(models_dir: Path, mnist, quick: bool) -> dict:
    """The inference, canvas, process and page benchmarks of the exported models (none when
    models_dir lacks them; the page's marked skipped without gradio_client)."""
    if not ((models_dir / "cnn.onnx").exists() and (models_dir / "mlp.onnx").exists()):
        print(f"no models in {models_dir}: run `make export` for the inference benchmarks")
        return {}
    print("inference", flush=True)
    results = {
        "inference": inference_bench(models_dir, mnist, 200 if quick else 2000),
        "canvas": canvas_bench(models_dir, mnist, 20 if quick else 100),
        "process": process_bench(models_dir),
    }
    try:
        results["page"] = page_bench(models_dir, mnist, 16 if quick else 160)
    except ImportError as e:
        results["page"] = {"skipped": str(e)}
    return results


KEPT = ("accelerator",)  # measured by another command (benchmarks/accelerator.py): kept as is


def kept(out: Path) -> dict:
    """The figures of OUT/results.json that make bench does not measure itself, to write back
    beside its own (none without a results.json)."""
    path = out / "results.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    return {k: previous[k] for k in KEPT if k in previous}


def main(argv=None) -> int:
    """Run the benchmarks and write JSON + markdown."""
    args = _parser().parse_args(argv)
    if args.rewrite:
        results = json.loads((Path(args.out) / "results.json").read_text())
        write_text_atomic(args.markdown, to_markdown(results))
        print(f"wrote {args.markdown} from {Path(args.out) / 'results.json'}")
        return 0
    from flaxdigits.data.mnist import load_mnist

    mnist = load_mnist()
    # Matmul-rate samples through the run, per precision: each floor takes its best.
    rates: dict[str, list[float]] = {}
    results: dict = {"machine": machine()}
    results |= training.training(mnist, 3 if args.quick else 10, not args.no_peer, rates)
    results |= training.augmentation(mnist, args.quick, Path(args.runs))
    training.sample_rates(rates)
    results["floor"] = training.floor(results["training"], rates)
    results |= serving(Path(args.models), mnist, args.quick)
    out = Path(args.out)
    results |= kept(out)
    write_json_atomic(out / "results.json", results)
    write_text_atomic(args.markdown, to_markdown(results))
    print(f"wrote {out / 'results.json'} and {args.markdown}")
    return 0
