"""The runs API: a finished run loads verified, splits the data as it was trained, evaluates."""

from __future__ import annotations

import json

import numpy as np

from flaxdigits import runs


def test_a_loaded_run_evaluates_to_its_recorded_test_accuracy(trained_runs, mnist):
    run = runs.load_run(trained_runs["cnn"])
    metrics = json.loads((trained_runs["cnn"] / "metrics.json").read_text())
    assert run.config.model == "cnn" and run.params == 542_230 == metrics["params"]
    assert run.checkpoint_state_sha256 == metrics["checkpoint_state_sha256"]
    result = run.evaluate(mnist.test_images, mnist.test_labels)
    assert result["accuracy"] == metrics["test_accuracy"]
    assert result["probabilities"].shape == (10_000, 10)
    np.testing.assert_array_equal(result["predictions"], result["probabilities"].argmax(-1))


def test_a_run_splits_the_data_with_its_own_validation_fraction(trained_runs, mnist):
    split = runs.load_run(trained_runs["mlp"]).split(mnist)
    assert len(split.train_images) == 54_000 and len(split.val_images) == 6_000


def test_evaluate_run_adds_a_confusion_matrix_that_matches_the_accuracy(trained_runs, mnist):
    result = runs.evaluate_run(trained_runs["mlp"], mnist=mnist, write=False)
    confusion = np.asarray(result["confusion_matrix"])
    assert confusion.sum() == 10_000
    assert np.trace(confusion) / 10_000 == result["test_accuracy"]
    recall = np.asarray(result["per_class_accuracy"])
    np.testing.assert_allclose(recall, np.diag(confusion) / confusion.sum(axis=1))


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    confusion = runs.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), n=3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 1, 0], [0, 1, 0]])
    np.testing.assert_allclose(runs.per_class_accuracy(confusion), [0.5, 1.0, 0.0])
