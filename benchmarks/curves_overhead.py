"""What the live curves cost: CNN epochs (seed recipe, all of MNIST) trained with the event files
on and off, run by run in turn, and the time spent inside the curve writes themselves; then the
epoch's images/s as the event file holds it beside metrics.json's. A development script, not a
test.

    .venv/bin/python -m benchmarks.curves_overhead [--pairs 2] [--epochs 1] [--out build/curves]

Prints JSON. The runs go to --out (deleted first); `tensorboard --logdir build/curves` shows them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from flaxdigits.data.mnist import load_mnist
from flaxdigits.training import curves
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.train import train


def time_curve_writes() -> list[float]:
    """Wrap the per-step and per-epoch writes (the epoch's includes its flush) with a timer."""
    spent = [0.0]
    for name in ("steps", "epoch"):
        original = getattr(curves.Curves, name)

        def timed(self, *args, _original=original):
            t0 = time.perf_counter()
            try:
                return _original(self, *args)
            finally:
                spent[0] += time.perf_counter() - t0

        setattr(curves.Curves, name, timed)
    return spent


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="runs with curves on, and as many off")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default="build/curves")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    mnist = load_mnist(log=lambda _: None)
    config = TrainConfig(model="cnn", epochs=args.epochs)
    spent = time_curve_writes()
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    for i in range(args.pairs):
        for label in ("off", "on") if i % 2 == 0 else ("on", "off"):
            run = out / f"cnn-{label}-{i}"
            metrics = train(
                config, run, data=mnist, progress=False, log=print, tensorboard=label == "on"
            )
            seconds[label] += [h["seconds"] for h in metrics["history"]]
    on, off = statistics.median(seconds["on"]), statistics.median(seconds["off"])
    last = out / f"cnn-on-{args.pairs - 1}"
    history = json.loads((last / "metrics.json").read_text())["history"]
    reader = EventAccumulator(str(last / curves.TB_DIR))
    reader.Reload()
    events = reader.Scalars("epoch/images_per_second")
    n_on = len(seconds["on"])
    print(
        json.dumps(
            {
                "cpu": f"{cpu_name()}, {len(os.sched_getaffinity(0))} cores",
                "epoch_seconds": seconds,
                "median_on": on,
                "median_off": off,
                "ratio_on_off": on / off,
                "curve_writes_seconds_per_epoch": spent[0] / n_on,
                "curve_writes_share_of_epoch": spent[0] / n_on / on,
                "images_per_second": {
                    "run": last.as_posix(),
                    "metrics_json": [h["images_per_second"] for h in history],
                    # steps per epoch * batch / the epoch's seconds, from metrics.json alone
                    "from_seconds": [
                        events[0].step * config.batch_size / h["seconds"] for h in history
                    ],
                    "event_file": [(e.step, e.value) for e in events],
                    "equal_float32": [
                        bool(e.value == np.float32(h["images_per_second"]))
                        for e, h in zip(events, history, strict=True)
                    ],
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
