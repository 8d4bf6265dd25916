"""sha256 of every parameter array after a short training run: the check that a refactor left
training bit-identical (run it before and after; the hashes must match on the same machine).

    .venv/bin/python -m benchmarks.param_digest [--epochs 1] [--recipe original]

A development script, not a test: the bits depend on the CPU's kernels, so the hashes are only
comparable on one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from flaxdigits.core.contract import MODEL_NAMES
from flaxdigits.data.mnist import load_mnist
from flaxdigits.runs import load_run
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.train import train


def digests(epochs: int = 1, recipe: str = "original") -> dict[str, str]:
    """{model + parameter path: sha256 of its bytes} after training each model."""
    mnist = load_mnist()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODEL_NAMES:
            config = TrainConfig.for_recipe(recipe, model=name, epochs=epochs)
            run_dir = Path(tmp) / name
            train(config, run_dir, data=mnist, progress=False, log=lambda _: None)
            params = nnx.state(load_run(run_dir).model, nnx.Param)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
                blob = np.ascontiguousarray(np.asarray(leaf)).tobytes()
                out[name + jax.tree_util.keystr(path)] = hashlib.sha256(blob).hexdigest()
    return out


def main(argv=None) -> int:
    """Print the digests as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--recipe", default="original")
    args = ap.parse_args(argv)
    print(json.dumps(digests(args.epochs, args.recipe), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
