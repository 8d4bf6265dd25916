"""Can a second model decide "not a digit" for a served one, so that the served answer keeps
its accuracy? A development probe (issue 33), not a test: no training, trained runs only.

ANSWER is the run whose answer is shown (its accuracy is untouched); each GATE run is a model
trained with outlier exposure (or any other run). Each run's logits are calibrated with the
temperature fitted on its own validation split. The scores compared, larger meaning more like a
digit: the answer's own confidence (the served rule today), each gate's confidence, the smaller
of the answer's and a gate's, and the larger of the mean probabilities of all runs together.
For each score: the threshold that rejects REJECT of the validation digits, the share of test
digits and of canvas-drawn test digits (evaluation/canvases.py's renderer, `mnist`
preprocessing) under it, the AUROC of test digits against the held-out non-digits of
evaluation/nondigits.py, and the share of them caught.

    .venv/bin/python -m benchmarks.gate_probe ANSWER_RUN GATE_RUN [GATE_RUN ...] [--canvases 2000]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.nondigit_probe import logits_of, score_figures
from flaxdigits.data.mnist import load_mnist
from flaxdigits.evaluation import calibration, nondigits
from flaxdigits.evaluation.canvases import drawn_digits
from flaxdigits.runs import load_run


def probabilities(run, split, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Calibrated probabilities of the run on each named input set."""
    t = calibration.fit_temperature(logits_of(run.model, split.val_images), split.val_labels)
    return {n: calibration.softmax(logits_of(run.model, x), t) for n, x in inputs.items()}


def figures(score: dict[str, np.ndarray]) -> dict:
    """The threshold's rejection rates and the AUROC of one score (see the docstring)."""
    return score_figures(score)[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("answer", type=Path)
    parser.add_argument("gates", type=Path, nargs="+")
    parser.add_argument("--canvases", type=int, default=2000, help="test digits drawn")
    args = parser.parse_args(argv)
    runs = [load_run(p) for p in (args.answer, *args.gates)]
    split = runs[0].split(load_mnist("auto", log=lambda _: None))
    drawn, refused = drawn_digits(split.test_images[: args.canvases], seed=0, method="mnist")
    inputs = {
        "val": split.val_images,
        "test": split.test_images,
        "canvas": drawn[~refused],
        "other": nondigits.heldout_inputs()[0],
    }
    probs = [probabilities(run, split, inputs) for run in runs]
    confidence = [{n: p.max(-1) for n, p in each.items()} for each in probs]
    rows = {"answer": figures(confidence[0])}
    for path, conf in zip(args.gates, confidence[1:], strict=True):
        rows[f"gate {path.name}"] = figures(conf)
        rows[f"min(answer, {path.name})"] = figures(
            {n: np.minimum(confidence[0][n], conf[n]) for n in inputs}
        )
    rows["max of mean probabilities, all"] = figures(
        {n: np.mean([p[n] for p in probs], axis=0).max(-1) for n in inputs}
    )
    test_accuracy = float((probs[0]["test"].argmax(-1) == split.test_labels).mean())
    print(json.dumps({"answer_test_accuracy": round(100 * test_accuracy, 2)}))
    for name, row in rows.items():
        print(json.dumps({"score": name} | row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
