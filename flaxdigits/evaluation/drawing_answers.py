"""The drawing rule's figures for `flaxdigits answers` (issue 33): how well mlp, cnn and the gate
together tell a drawing from a non-digit, as the page decides it.

For each gate file in a models folder (gate.onnx, gate.int8.onnx), the folder's served files of
the same variant are loaded as the page loads them (serve/runtime/model_set.py: each checked
against its manifest, the gate's drawing rule against their sha256; a stale rule is refused,
as the page refuses it). The drawing's score (contract.drawing_scores) is measured on the test
digits, the held-out non-digits and the test digits drawn as canvases: the AUROC of the score,
digits against non-digits, overall and per kind, and the shares under the rule's threshold
(test digits and canvases rejected, non-digits caught). Every file's probabilities on each
input set are computed once (Inputs), shared with the per-file figures of evaluation/answers.py.
numpy and onnxruntime only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from flaxdigits.core import contract
from flaxdigits.evaluation import calibration, robustness
from flaxdigits.serve.runtime.model_set import load_models
from flaxdigits.serve.runtime.predictor import Predictor

CANVASES = 2000  # the first test digits drawn as canvases (fewer under --limit)
# The distorted digits the rule is measured on (evaluation/robustness.py's deformations and the
# served re-centring): the first DISTORTED test digits at the levels issue 33 names.
DISTORTED = 1000
DISTORTED_GRID = {
    "rotation": (-45.0, -30.0, 30.0, 45.0),
    "slant": (-0.4, 0.4),
    "thickness": (-0.5, 2.0, 2.5),
}


def distorted_sets(test_images: np.ndarray) -> dict[str, np.ndarray]:
    """{"distortion:level": model inputs (n, 28, 28, 1)} of the first DISTORTED test digits
    under each level of DISTORTED_GRID; a canvas the preprocessing refuses as empty (a digit
    thinned away) is left out: no answer is given for it."""
    digits, sets = test_images[:DISTORTED], {}
    for name, levels in DISTORTED_GRID.items():
        images, refused = robustness.render_levels(name, levels, digits)
        for level, level_images, level_refused in zip(levels, images, refused, strict=True):
            kept = level_images[~level_refused]
            sets[f"{name}:{level:g}"] = contract.to_model_input(kept)
    return sets


class Inputs:
    """The named input sets every file is measured on ("test", "heldout", "canvas": (N, 28,
    28[, 1]) float32 in [0, 1]), each file's probabilities on each computed once, by its
    sha256: the per-file figures and the drawing rule's read the same arrays."""

    def __init__(self, sets: dict[str, np.ndarray]) -> None:
        self.sets = sets
        self._done: dict[tuple[str, str], np.ndarray] = {}

    def probabilities(self, predictor: Predictor, name: str) -> np.ndarray:
        """(N, 10) calibrated probabilities of the predictor's file on the set `name`."""
        key = (predictor.sha256, name)
        if key not in self._done:
            self._done[key] = predictor.predict_batch(self.sets[name])
        return self._done[key]


def share(flags) -> float:
    """The share of set flags, rounded as the report's figures are (0 of none)."""
    flags = np.asarray(flags, bool)
    return round(float(flags.mean()), 6) if flags.size else 0.0


def per_kind(figure: Callable[[np.ndarray], float], values: np.ndarray, kinds) -> dict:
    """{"all": figure(values), kind: figure(values of that kind), ...} over held-out values."""
    kinds = np.asarray(kinds)
    out = {"all": round(figure(values), 6)}
    return out | {k: round(figure(values[kinds == k]), 6) for k in sorted(set(kinds.tolist()))}


def gate_files(directory) -> list[Path]:
    """The gate's files in a models folder, float before int8 (none in a folder without one)."""
    found = (
        Path(directory) / contract.model_file(contract.GATE_NAME, v)
        for v in contract.VARIANT_SUFFIXES
    )
    return [p for p in found if p.is_file()]


def measure_rule(gate_path: Path, inputs: Inputs, kinds: Sequence[str]) -> dict:
    """The drawing rule of one gate file with its folder's served files of the same variant,
    on the test digits, the held-out non-digits and the canvases (the module docstring).

    Raises:
        FileNotFoundError, ModelLoadError: as the page's load_models, e.g. a gate whose rule
            was fitted with other mlp or cnn files.
    """
    variant = contract.variant_of(gate_path.name)
    models = load_models(gate_path.parent, variant=variant)
    members = {**models, contract.GATE_NAME: models.gate}
    below = models.rule["not_a_digit_below"]

    def scores(name: str) -> np.ndarray:
        served = [inputs.probabilities(p, name) for p in models.values()]
        return contract.drawing_scores(served, inputs.probabilities(models.gate, name))

    test, other = scores("test"), scores("heldout")
    caught = other < below
    entry = {
        "variant": variant,
        "files": {name: p.path.name for name, p in members.items()},
        "sha256": {name: p.sha256 for name, p in members.items()},
        "rule": models.rule,
        "test": {"not_a_digit": share(test < below)},
        "auroc": per_kind(lambda o: calibration.auroc(test, o), other, kinds),
        "caught": per_kind(lambda c: float(np.mean(c)), caught, kinds),
        "passed": np.flatnonzero(~caught).tolist(),
    }
    if "canvas" in inputs.sets:
        entry["canvas"] = {"not_a_digit": share(scores("canvas") < below)}
    distorted = [name for name in inputs.sets if name.split(":")[0] in DISTORTED_GRID]
    if distorted:  # {"rotation": {"-45": share, ...}, ...}
        entry["distorted"] = {}
        for name in distorted:
            distortion, level = name.split(":")
            rejected = share(scores(name) < below)
            entry["distorted"].setdefault(distortion, {})[level] = rejected
    return entry


def row_label(label: str, entry: dict) -> str:
    """The table's name of a drawing rule: its folder, its variant and who votes."""
    folder = label[: -len(entry["files"][contract.GATE_NAME])]
    voters = " + ".join(entry["files"])
    return f"{folder}drawing rule ({entry['variant']}: {voters})"
