"""Can a small "is it a digit?" head on a trained model's frozen features say "not a digit"
without costing the classifier anything? A development probe (issue 33), not a test.

The classifier is untouched by construction: its ten outputs, accuracy and robustness stay
what they were. A second head reads the model's hidden activations (the CNN's 100 or the MLP's
128, after ReLU; or, with --features conv, the CNN's 5,408 pooled conv activations) and its
logits, and is trained as a binary classifier: digits distorted by the
model's own robust augmentation against the generated non-digits of training/outliers.py (the
same kinds outlier exposure trains on; the held-out kinds of evaluation/nondigits.py are never
seen). The threshold rejects REJECT of the validation digits; the AUROC is that of the test
digits against the held-out non-digits, beside the confidence's.

    .venv/bin/python -m benchmarks.detector_head_probe RUN_DIR [--features hidden|conv]
        [--batches 200] [--hidden 64] [--steps 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.feature_distance_probe import conv_features, hidden_features
from benchmarks.nondigit_probe import logits_of, score_figures
from flaxdigits.core import contract
from flaxdigits.data.mnist import load_mnist
from flaxdigits.evaluation import calibration, nondigits
from flaxdigits.runs import load_run
from flaxdigits.training import augment, outliers
from flaxdigits.training import config as C


def training_inputs(split, aug, batches: int, batch: int, seed: int):
    """(digits, non-digits), each (batches * batch, 28, 28) float: training-split digits through
    the recipe's augmentation at a random progress, and generated non-digits."""

    @jax.jit
    def one(key, clean):
        k_aug, k_prog = jax.random.split(key)
        progress = jax.random.uniform(k_prog, ())
        digits = augment.augment_batch(k_aug, clean, aug, progress)
        return digits[..., 0], outliers.outlier_batch(key, clean)[..., 0]

    rng = np.random.default_rng(seed)
    train = contract.scale_pixels(split.train_images).astype(np.float32)[..., None]
    ds, os_ = [], []
    for b in range(batches):
        idx = rng.choice(len(train), batch, replace=False)
        d, o = one(jax.random.PRNGKey(seed * 100_000 + b), jnp.asarray(train[idx]))
        ds.append(np.asarray(d))
        os_.append(np.asarray(o))
    return np.concatenate(ds), np.concatenate(os_)


def features(model, images: np.ndarray, kind: str = "hidden") -> np.ndarray:
    """Hidden (or conv) activations, logits and the log-softmax's largest value."""
    h = (conv_features if kind == "conv" else hidden_features)(model, images)
    z = logits_of(model, images)
    top = calibration.log_softmax(z).max(-1, keepdims=True)
    return np.concatenate([h, z, top], axis=1).astype(np.float32)


def fit_head(x: np.ndarray, y: np.ndarray, hidden: int, steps: int, seed: int):
    """A standardised-input MLP x -> hidden ReLU -> 1 (or linear when hidden = 0), trained with
    Adam on the logistic loss; returns score(x) (larger: more like a digit)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = (x - mean) / std
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    d = x.shape[1]
    if hidden:
        params = {
            "w1": jax.random.normal(k1, (d, hidden)) * np.sqrt(2 / d),
            "b1": jnp.zeros(hidden),
            "w2": jax.random.normal(k2, (hidden, 1)) * np.sqrt(1 / hidden),
            "b2": jnp.zeros(1),
        }
    else:
        params = {"w2": jnp.zeros((d, 1)), "b2": jnp.zeros(1)}

    def score(p, v):
        h = jax.nn.relu(v @ p["w1"] + p["b1"]) if "w1" in p else v
        return (h @ p["w2"] + p["b2"])[:, 0]

    def loss(p, v, t):
        return optax.sigmoid_binary_cross_entropy(score(p, v), t).mean()

    opt = optax.adamw(optax.cosine_decay_schedule(3e-3, steps), weight_decay=1e-4)
    state = opt.init(params)

    @jax.jit
    def step(p, s, v, t):
        g = jax.grad(loss)(p, v, t)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    rng = np.random.default_rng(seed)
    xs_j, y_j = jnp.asarray(xs), jnp.asarray(y, jnp.float32)
    for _ in range(steps):
        idx = jnp.asarray(rng.integers(0, len(xs), 512))
        params, state = step(params, state, xs_j[idx], y_j[idx])
    final = jax.jit(score)
    return lambda v: np.asarray(final(params, jnp.asarray((v - mean) / std)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--features", choices=("hidden", "conv"), default="hidden")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    run = load_run(args.run)
    split = run.split(load_mnist("auto", log=lambda _: None))
    aug = C.RECIPES["robust"][run.config.model].augment
    digits, others = training_inputs(split, aug, args.batches, 256, args.seed)
    x = np.concatenate([features(run.model, v, args.features) for v in (digits, others)])
    y = np.concatenate([np.ones(len(digits)), np.zeros(len(others))])
    score = fit_head(x, y, args.hidden, args.steps, args.seed)
    images, kinds, names = nondigits.heldout_inputs()
    s = {
        n: score(features(run.model, v, args.features))
        for n, v in (("val", split.val_images), ("test", split.test_images), ("other", images))
    }
    figures, caught = score_figures(s, kinds)
    row = {
        "run": str(args.run),
        "features": args.features,
        "hidden": args.hidden,
        "batches": args.batches,
        **{f"head_{k}": v for k, v in figures.items()},
        "passed_as_digits": sorted({names[i] for i in np.flatnonzero(~caught)})[:30],
        "seconds": round(time.perf_counter() - start),
    }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
