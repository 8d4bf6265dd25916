"""A toy release's models: mlp and cnn float + int8 files with metadata and manifests, as
`export --int8` lays them out (tests of releases, the model card, hosting, serve-only installs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from flaxdigits.core import contract
from tests.support.toy_onnx import toy_model_bytes

ACCURACY = {"mlp": (0.9123, 0.9101), "cnn": (0.9876, 0.9880)}  # (float32, int8)
DIGIT = {"mlp": 3, "cnn": 8}
ANSWER_RULE = {  # what `export` fits on the validation split (export/confidence.py)
    "mlp": {
        "temperature": 1.4321,
        "not_a_digit_below": 0.4567,
        "not_sure_below": 0.8,
        "validation_rejected": 0.005,
    },
    "cnn": {
        "temperature": 1.1234,
        "not_a_digit_below": 0.6123,
        "not_sure_below": 0.8,
        "validation_rejected": 0.0048,
    },
}


def write_models(
    directory: Path, digits: dict[str, int] = DIGIT, answers: dict[str, dict] | None = None
) -> Path:
    """Toy mlp/cnn float + int8 files with metadata and manifests, as `export --int8` lays out;
    each model reads any ink as its digit in `digits`. With `answers` ({file: the manifest
    entry's "answers"}), each model carries ANSWER_RULE in its files and manifest; without, it
    is a model exported before answer rules."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in contract.MODEL_NAMES:
        entries = []
        for variant, file, acc in zip(
            ("float32", "int8"), (f"{name}.onnx", f"{name}.int8.onnx"), ACCURACY[name], strict=True
        ):
            meta = {
                contract.META_PARAMS: "7850",
                contract.META_TEST_ACCURACY: f"{acc:.4f}",
                contract.META_VARIANT: variant,
                contract.META_RECIPE: "robust",
            }
            if answers is not None:
                meta[contract.META_ANSWER_RULE] = json.dumps(ANSWER_RULE[name])
            data = toy_model_bytes(name=name, ink_digit=digits[name], metadata=meta)
            (directory / file).write_bytes(data)
            entries.append(
                {
                    "file": file,
                    "variant": variant,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "test_accuracy": acc,
                    "parity": {"max_abs_diff": 2.5e-6, "argmax_mismatches": 0},
                }
                | ({"answers": answers[file]} if answers is not None else {})
            )
        manifest = {
            "schema": contract.MANIFEST_SCHEMA,
            "model": name,
            "params": 7850,
            "train_config": {"epochs": 40, "batch_size": 128, "learning_rate": 0.003, "seed": 0},
            "recipe": {
                "name": "robust",
                "schedule": "warmup_cosine",
                "augment": {"share": 0.7},
                "dropout": 0.5 if name == "cnn" else 0.0,
            },
            "files": entries,
        }
        if answers is not None:
            manifest["answer_rule"] = ANSWER_RULE[name]
        if name == "cnn":  # the mlp's manifest is one from before precisions were recorded
            manifest["training_precision"] = "bfloat16"
        (directory / f"{name}.json").write_text(json.dumps(manifest))
    return directory
