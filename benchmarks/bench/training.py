"""Training benchmarks: flaxdigits per epoch at three batch sizes in each precision (float32 and
mixed bfloat16), the PyTorch reference on the same data in float32 and under torch.autocast
bfloat16, the robust recipe's augmentation cost, and how far each model sits from the machine's
compute floor in each precision."""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench.machine import matmul_gflops
from flaxdigits.core import contract

PRECISIONS = contract.PRECISIONS  # float32 first: the rows and floor of before bfloat16

SEED_TARGETS = {"mlp": 0.977, "cnn": 0.986}  # the original study's 5-epoch test accuracies
BATCHES = (32, 128, 1024)
TRAIN_IMAGES = 54_000


def row_key(name: str, batch: int, precision: str) -> str:
    """A row's key in results["training"] and results["peer"]: "cnn/32" in float32 (the keys
    of the results from before bfloat16 rows), "cnn/32/bfloat16" in bfloat16."""
    return f"{name}/{batch}" if precision == "float32" else f"{name}/{batch}/{precision}"


def fastest_peer(peer: dict, name: str, batch: int) -> tuple[str, dict] | None:
    """(precision, result) of the PyTorch peer's fastest mode (median s/epoch) for the model at
    batch: float32 or autocast bfloat16; None when the peer did not run there."""
    modes = [
        (p, peer[row_key(name, batch, p)]) for p in PRECISIONS if row_key(name, batch, p) in peer
    ]
    return min(modes, key=lambda m: m[1]["seconds_per_epoch"], default=None)


def train_bench(mnist, name: str, batch: int, epochs: int, precision: str = "float32") -> dict:
    """flaxdigits training: per-epoch seconds (median), compile, test accuracy per epoch."""
    from flaxdigits.training.config import TrainConfig
    from flaxdigits.training.train import train

    cfg = TrainConfig(model=name, epochs=epochs, batch_size=batch, precision=precision)
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
        "images_per_second": TRAIN_IMAGES // batch * batch / median,
        "compile_seconds": m["compile_seconds"],
        "test_accuracy_per_epoch": acc,
    }
    target = SEED_TARGETS[name]
    reached = next((i for i, a in enumerate(acc) if a >= target), None)
    out["seconds_to_seed_accuracy"] = None if reached is None else sum(secs[: reached + 1])
    out["epochs_to_seed_accuracy"] = None if reached is None else reached + 1
    return out


def peer_bench(mnist, name: str, batch: int, epochs: int, precision: str) -> dict | None:
    """The PyTorch reference in precision (bfloat16: under torch.autocast), if torch is
    installed."""
    try:
        from benchmarks import torch_peer
    except ImportError:
        return None
    try:
        r = torch_peer.train_epochs(
            name, mnist, batch, epochs, threads=os.cpu_count() or 1, precision=precision
        )
    except ImportError:
        return None
    return {
        "seconds_per_epoch": statistics.median(r["seconds"]),
        "epoch_seconds": r["seconds"],
        "test_accuracy": r["test_accuracy"],
        "torch": r["torch"],
        "mode": r["mode"],
        "cpu_capability": r["cpu_capability"],
    }


def sample_rates(rates: dict[str, list[float]]) -> None:
    """Append a matmul-rate sample in each precision to rates[precision]."""
    for precision in PRECISIONS:
        rates.setdefault(precision, []).append(matmul_gflops(precision=precision))


def training(mnist, epochs: int, peer: bool, rates: dict[str, list[float]]) -> dict:
    """Both models at each batch in each precision (epochs in float32 at batch 32, 3 at the
    others) and, with peer, the PyTorch reference in each (3 epochs); a matmul-rate sample in
    each precision is appended to rates before each."""
    results: dict = {"training": {}, "peer": {}}
    for name in contract.MODEL_NAMES:
        for batch in BATCHES:
            for precision in PRECISIONS:
                sample_rates(rates)
                key = row_key(name, batch, precision)
                n_epochs = epochs if (batch, precision) == (32, "float32") else 3
                print(f"training {key} ({n_epochs} epochs)", flush=True)
                results["training"][key] = train_bench(mnist, name, batch, n_epochs, precision)
                if peer:
                    print(f"peer {key}", flush=True)
                    result = peer_bench(mnist, name, batch, 3, precision)
                    if result:
                        results["peer"][key] = result
    return results


def augmentation(mnist, quick: bool, runs: Path) -> dict:
    """The robust recipe's step with and without its distortions, and how long the trained
    robust CNN took to reach 99% test accuracy."""
    from benchmarks import augment_cost

    print("augmentation cost (robust recipe)", flush=True)
    return {
        "augmentation": augment_cost.costs(mnist, 4 if quick else 12),
        "robust_cnn_time_to_99": augment_cost.time_to_accuracy(runs / "robust" / "cnn", 0.990),
    }


def floor(training_results: dict, rates: dict[str, list[float]]) -> dict:
    """Each model's training FLOPs per epoch over the best matmul rate sampled in each
    precision: the time an epoch would take at that rate, and the measured epochs (batch 32
    and 128) over it. float32's at the top level (as before bfloat16 rows), bfloat16's under
    "bfloat16"."""
    out = _floor(training_results, rates["float32"], "float32")
    if rates.get("bfloat16"):
        out["bfloat16"] = _floor(training_results, rates["bfloat16"], "bfloat16")
    return out


def _floor(training_results: dict, samples: list[float], precision: str) -> dict:
    from flaxdigits.models import train_flops_per_image

    rate = max(samples)
    out: dict = {"matmul_gflops": rate, "matmul_gflops_samples": samples}
    for name in contract.MODEL_NAMES:
        epoch_flops = train_flops_per_image(name) * TRAIN_IMAGES
        floor_s = epoch_flops / (rate * 1e9)
        b32, b128 = (
            training_results[row_key(name, b, precision)]["seconds_per_epoch"] for b in (32, 128)
        )
        out[name] = {
            "train_flops_per_epoch": epoch_flops,
            "floor_seconds_per_epoch": floor_s,
            "measured_over_floor_b32": b32 / floor_s,
            "measured_over_floor_b128": b128 / floor_s,
        }
    return out
