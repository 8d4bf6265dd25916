"""How far a model's confidence can be trusted: temperature scaling, expected calibration error,
the "not a digit" threshold and how well it separates digits from non-digits. numpy and scipy.

- Temperature scaling (Guo et al. 2017): one scalar T dividing the logits, fitted on validation
  data by minimising the negative log-likelihood; it never changes which digit is answered.
- ECE: the mean |accuracy - confidence| over 15 equal-width confidence bins, weighted by the
  bins' shares (the usual definition); reliability-diagram data comes with it.
- The threshold: the confidence (the largest probability) below which the answer is "not a
  digit", chosen on validation digits as the quantile that rejects a given share of them.
- AUROC of the confidence, digits against non-digits (the Mann-Whitney statistic, ties halved).
"""

from __future__ import annotations

import numpy as np
from scipy import optimize, stats

ECE_BINS = 15
MIN_T, MAX_T = 0.05, 20.0  # the temperatures searched


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(logits, np.float64) / temperature))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels at this temperature."""
    logp = log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [MIN_T, MAX_T] with the least NLL on (logits, labels) (scipy's bounded Brent
    search over log T)."""
    found = optimize.minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(MIN_T), np.log(MAX_T)),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(found.x))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> dict:
    """ECE and the reliability diagram's bins: {"ece", "bins": [{"low", "high", "count",
    "accuracy", "confidence"}]} (empty bins have count 0 and None figures)."""
    confidence = probabilities.max(-1)
    correct = probabilities.argmax(-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        acc = float(correct[inside].mean()) if count else None
        conf = float(confidence[inside].mean()) if count else None
        if count:
            ece += count / len(labels) * abs(acc - conf)
        out.append(
            {
                "low": edges[b],
                "high": edges[b + 1],
                "count": count,
                "accuracy": acc,
                "confidence": conf,
            }
        )
    return {"ece": float(ece), "bins": out}


def threshold_for(confidence: np.ndarray, reject_share: float) -> float:
    """The confidence below which `reject_share` of these (validation digits') answers fall."""
    return float(np.quantile(np.asarray(confidence, np.float64), reject_share))


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counted half: the Mann-Whitney U of the
    positives over n_pos * n_neg."""
    u = stats.mannwhitneyu(positive, negative, alternative="two-sided").statistic
    return float(u / (len(positive) * len(negative)))
