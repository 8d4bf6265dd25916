"""Train both models on 1 and on 4 forced CPU devices; print the largest parameter difference."""

import json
import tempfile
from pathlib import Path

import jax
import numpy as np

from flaxdigits.data.mnist import MNIST, load_mnist
from flaxdigits.runs import load_run
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.train import train

assert len(jax.local_devices()) == 4, jax.local_devices()
m = load_mnist("cache")
small = MNIST(
    m.train_images[:1600], m.train_labels[:1600], m.test_images[:400], m.test_labels[:400], "subset"
)
out = {}
with tempfile.TemporaryDirectory() as tmp:
    for model in ("mlp", "cnn"):
        cfg = TrainConfig(model=model, epochs=2, batch_size=64)
        params = {}
        for n in (1, 4):
            run = Path(tmp) / f"{model}-{n}"
            metrics = train(cfg, run, data=small, devices=n, progress=False, log=lambda _: 0)
            assert metrics["devices_used"] == n
            params[n] = [np.asarray(x) for x in jax.tree.leaves(load_run(run).model)]
        diffs = [float(np.max(np.abs(a - b))) for a, b in zip(params[1], params[4], strict=True)]
        scale = max(float(np.max(np.abs(a))) for a in params[1])
        out[model] = {"max_abs_diff": max(diffs), "max_abs_param": scale}
print(json.dumps(out))
