"""Checkpoint save and restore time and size on disk for the CNN's training state. A development
script, not a test; it runs against whichever flaxdigits is importable, so the same script
measures the format of another commit:

    .venv/bin/python -m benchmarks.checkpoint_io [--saves 8]
    git archive main flaxdigits | tar -x -C /tmp/old && PYTHONPATH=/tmp/old .venv/bin/python ...

The state has the CNN's shapes, filled with random values (a trained state's bytes do not
compress; a fresh one's zero Adam moments would). Each save is an epoch's save into one run
directory (pruning included); each restore reads the newest checkpoint back, verified. Medians
are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import flaxdigits
from flaxdigits.training import checkpoint
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.state import init_state


def random_state(config: TrainConfig):
    """init_state(config) with every float leaf replaced by random values (as if trained)."""
    _, state = init_state(config)
    rng = np.random.default_rng(0)

    def fill(x):
        x = np.asarray(x)
        return rng.standard_normal(x.shape).astype(x.dtype) if x.dtype.kind == "f" else x

    return jax.tree.map(lambda x: jax.numpy.asarray(fill(x)), state)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saves", type=int, default=8)
    args = ap.parse_args()
    config = TrainConfig(model="cnn")
    state = random_state(config)
    meta = {"config": config.to_dict(), "history": [], "snapshots": {}}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        saves, restores = [], []
        for epoch in range(1, args.saves + 1):
            t0 = time.perf_counter()
            checkpoint.save(run, state, meta, epoch=epoch)
            saves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            restored, _ = checkpoint.restore(run, state)
            jax.block_until_ready(restored)
            restores.append(time.perf_counter() - t0)
        for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        files = [p for p in run.rglob("*") if p.is_file()]
        ptr = json.loads((run / checkpoint.POINTER).read_text())
        newest = ptr.get("size") if "files" in ptr else ptr["size"]
        result = {
            "flaxdigits": flaxdigits.__version__,
            "format": ptr["format"],
            "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} dev",
            "save_ms_median": 1e3 * statistics.median(saves),
            "restore_ms_median": 1e3 * statistics.median(restores),
            "checkpoint_bytes": newest,
            "checkpoint_files": len(ptr.get("files", [ptr.get("file")])),
            "pointer_bytes": (run / checkpoint.POINTER).stat().st_size,
            "run_dir_bytes": sum(p.stat().st_size for p in files),
            "state_array_bytes": sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
