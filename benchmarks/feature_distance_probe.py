"""Does the distance of a drawing's features from the training digits' say "not a digit" better
than the confidence does? A post-hoc probe of a trained run, no retraining: the classifier and
its accuracy are untouched by construction.

The features are the CNN's 100 hidden units (after ReLU) or the MLP's 128. Class means and one
shared covariance are fitted on the training split's digits (Lee et al. 2018, "A simple unified
framework for detecting out-of-distribution samples"); a drawing's score is its smallest
Mahalanobis distance to a class mean. The threshold rejects REJECT of the validation digits (as
the served rule does with the confidence); the AUROC is that of the test digits against the
held-out non-digits of flaxdigits/evaluation/nondigits.py, beside the confidence's own. A
development script, not a test.

    .venv/bin/python -m benchmarks.feature_distance_probe RUN_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from flax import nnx

from benchmarks.nondigit_probe import batched, logits_of, score_figures
from flaxdigits.data.mnist import load_mnist
from flaxdigits.evaluation import calibration, nondigits
from flaxdigits.models.conv_pool import conv_max_pool_reference
from flaxdigits.runs import load_run


def _conv_out(m, x):
    """The CNN's pooled conv activations after ReLU, flattened (B, 5408) (evaluated)."""
    y = conv_max_pool_reference(x, m.conv.kernel[...])
    return nnx.relu(y + m.conv.bias[...].reshape(1, 1, 1, -1)).reshape(x.shape[0], -1)


def conv_features(model, images: np.ndarray) -> np.ndarray:
    """The CNN's pooled conv activations (N, 5408) of float (N, 28, 28) or uint8 images."""
    return batched(nnx.jit(_conv_out), model, images)


def hidden_features(model, images: np.ndarray) -> np.ndarray:
    """The hidden layer's activations (N, units) of float (N, 28, 28) or uint8 images."""

    def cnn(m, x):  # CNN.__call__ up to its hidden layer (evaluated: no dropout)
        return nnx.relu(m.hidden(_conv_out(m, x)))

    def mlp(m, x):
        return nnx.relu(m.hidden(x.reshape(x.shape[0], -1)))

    return batched(nnx.jit(cnn if hasattr(model, "conv") else mlp), model, images)


def fit(features: np.ndarray, labels: np.ndarray):
    """Class means (10, D) and the shared precision matrix (D, D), regularised a little."""
    means = np.stack([features[labels == c].mean(0) for c in range(10)])
    centred = features - means[labels]
    cov = centred.T @ centred / len(features)
    cov += 1e-3 * np.trace(cov) / len(cov) * np.eye(len(cov))
    return means, np.linalg.inv(cov)


def distance(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Smallest Mahalanobis distance (squared) to a class mean, per row."""
    d = features[:, None, :] - means[None]  # (N, 10, D)
    return np.einsum("ncd,de,nce->nc", d, precision, d).min(1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    args = parser.parse_args(argv)
    run = load_run(args.run)
    split = run.split(load_mnist("auto", log=lambda _: None))
    images, kinds, _ = nondigits.heldout_inputs()
    means, precision = fit(hidden_features(run.model, split.train_images), split.train_labels)
    score = {  # larger: more like a digit
        name: -distance(hidden_features(run.model, x), means, precision)
        for name, x in (("val", split.val_images), ("test", split.test_images), ("other", images))
    }
    figures, _ = score_figures(score, kinds)
    logits = {
        n: logits_of(run.model, x) for n, x in (("test", split.test_images), ("other", images))
    }
    confidence = {n: calibration.softmax(v).max(-1) for n, v in logits.items()}
    row = {
        "run": str(args.run),
        **{f"distance_{k}": v for k, v in figures.items()},
        "confidence_auroc": round(calibration.auroc(confidence["test"], confidence["other"]), 4),
    }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
