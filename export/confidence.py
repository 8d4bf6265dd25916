"""A run's answer rule, fitted on its validation split: the temperature the exported graph divides
the logits by, and the confidence under which its answer is "not a digit".

The temperature minimises the validation digits' negative log-likelihood (temperature scaling:
the answered digit never changes). The "not a digit" threshold is the calibrated confidence
under which contract.NOT_A_DIGIT_VALIDATION_SHARE of the validation digits fall; "not sure" is
contract.NOT_SURE_BELOW (a calibrated confidence under it is right less than 4 times in 5), or
the threshold if that is higher. The test set is never used to fit anything: it only measures
(`measured`). A run trained with no validation split gets no rule (temperature 1, every answer a
digit), and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flaxdigits.core import contract
from flaxdigits.evaluation import calibration


def fit_rule(run, split) -> dict[str, float] | None:
    """The answer rule (contract.ANSWER_RULE_KEYS) of a run, from its validation split; None
    without one."""
    if len(split.val_labels) == 0:
        return None
    logits = run.logits(split.val_images)
    temperature = calibration.fit_temperature(logits, split.val_labels)
    confidence = calibration.softmax(logits, temperature).max(-1)
    low = calibration.threshold_for(confidence, contract.NOT_A_DIGIT_VALIDATION_SHARE)
    rule = {
        "temperature": round(temperature, 6),
        "not_a_digit_below": round(low, 6),
        "not_sure_below": round(max(contract.NOT_SURE_BELOW, low), 6),
    }
    rule["validation_rejected"] = round(float(np.mean(confidence < rule["not_a_digit_below"])), 6)
    return contract.check_answer_rule(rule)


def measured(probabilities: np.ndarray, labels: np.ndarray, rule: dict | None) -> dict[str, Any]:
    """What a file's (calibrated) test-set probabilities say under the rule: ECE, the share of
    test digits answered "not a digit" and "not sure", the accuracy of the "digit" answers."""
    confidence = probabilities.max(-1)
    answers = contract.answers(confidence, rule)
    sure = answers == "digit"
    correct = probabilities.argmax(-1) == labels
    return {
        "ece": round(calibration.reliability(probabilities, labels)["ece"], 6),
        "not_a_digit": round(float(np.mean(answers == "not a digit")), 6),
        "not_sure": round(float(np.mean(answers == "not sure")), 6),
        "digit_answers_accuracy": round(float(correct[sure].mean()) if sure.any() else 0.0, 6),
    }
