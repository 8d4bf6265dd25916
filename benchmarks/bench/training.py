"""Training benchmarks: flaxdigits per epoch at three batch sizes, the PyTorch reference on the
same data, the robust recipe's augmentation cost, and how far each model sits from the machine's
compute floor."""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench.machine import matmul_gflops
from flaxdigits.core import contract

SEED_TARGETS = {"mlp": 0.977, "cnn": 0.986}  # the original study's 5-epoch test accuracies
BATCHES = (32, 128, 1024)
TRAIN_IMAGES = 54_000


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
        "images_per_second": TRAIN_IMAGES // batch * batch / median,
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


def training(mnist, epochs: int, peer: bool, rates: list[float]) -> dict:
    """Both models at each batch (epochs at batch 32, 3 at the others) and, with peer, the
    PyTorch reference (3 epochs); a matmul-rate sample is appended to rates before each."""
    results: dict = {"training": {}, "peer": {}}
    for name in contract.MODEL_NAMES:
        for batch in BATCHES:
            rates.append(matmul_gflops())
            n_epochs = epochs if batch == 32 else 3
            print(f"training {name} batch {batch} ({n_epochs} epochs)", flush=True)
            results["training"][f"{name}/{batch}"] = train_bench(mnist, name, batch, n_epochs)
            if peer:
                print(f"peer {name} batch {batch}", flush=True)
                result = peer_bench(mnist, name, batch, 3)
                if result:
                    results["peer"][f"{name}/{batch}"] = result
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


def floor(training_results: dict, rates: list[float]) -> dict:
    """Each model's training FLOPs per epoch over the best matmul rate sampled: the time an
    epoch would take at that rate, and the measured epochs (batch 32 and 128) over it."""
    from flaxdigits.models import train_flops_per_image

    rate = max(rates)
    out: dict = {"matmul_gflops": rate, "matmul_gflops_samples": rates}
    for name in contract.MODEL_NAMES:
        epoch_flops = train_flops_per_image(name) * TRAIN_IMAGES
        floor_s = epoch_flops / (rate * 1e9)
        b32, b128 = (training_results[f"{name}/{b}"]["seconds_per_epoch"] for b in (32, 128))
        out[name] = {
            "train_flops_per_epoch": epoch_flops,
            "floor_seconds_per_epoch": floor_s,
            "measured_over_floor_b32": b32 / floor_s,
            "measured_over_floor_b128": b128 / floor_s,
        }
    return out
