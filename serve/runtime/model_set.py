"""The served models together: mlp and cnn, and the gate that decides with them that a drawing is
"not a digit" (contract.GATE_NAME, contract.drawing_answers).

A ModelSet is the read-only mapping {model name: Predictor} the page, /predict and `predict`
show, one answer per model. With a gate, ModelSet.predict runs the gate too and applies the
drawing rule its manifest carries for the variant loaded: the rule names the files it was fitted
with by sha256, and a rule fitted with other files is refused (ModelLoadError), never applied.
Without a gate file (a folder from before it, or a lone model), each model answers by its own
rule, as before. numpy and onnxruntime only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from flaxdigits.core import contract
from flaxdigits.serve.runtime.predictor import ModelLoadError, Prediction, Predictor


@dataclasses.dataclass(frozen=True)
class Drawing:
    """The drawing's answer under the drawing rule: "digit" or "not a digit", the score it was
    read from (contract.drawing_scores) and the threshold."""

    answer: str
    score: float
    not_a_digit_below: float

    def to_json(self) -> dict:
        return {
            "answer": self.answer,
            "score": round(self.score, 6),
            "not_a_digit_below": self.not_a_digit_below,
        }


class ModelSet(Mapping[str, Predictor]):
    """{name: Predictor} in page order, with the gate and its drawing rule when there is one."""

    def __init__(
        self,
        predictors: Mapping[str, Predictor],
        gate: Predictor | None = None,
        rule: dict | None = None,
    ) -> None:
        self._predictors = dict(predictors)
        if (gate is None) != (rule is None):
            raise ValueError("a gate comes with its drawing rule")
        if rule is not None:
            check_members(rule, self._predictors, gate)
        self.gate, self.rule = gate, rule

    def __getitem__(self, name: str) -> Predictor:
        return self._predictors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._predictors)

    def __len__(self) -> int:
        return len(self._predictors)

    def __repr__(self) -> str:
        gate = f", gate={self.gate.path.name!r}" if self.gate else ""
        return f"ModelSet({list(self._predictors)}{gate})"

    def predict(self, image) -> tuple[dict[str, Prediction], Drawing | None]:
        """Every model's prediction for one preprocessed (28, 28) image, under the drawing rule
        when there is a gate, and the drawing's answer (None without a gate)."""
        predictions = {name: p.predict(image) for name, p in self._predictors.items()}
        if self.gate is None:
            return predictions, None
        members = np.asarray([p.probabilities for p in predictions.values()])[:, None]
        gate = np.asarray(self.gate.predict(image).probabilities)[None]
        score = float(contract.drawing_scores(members, gate)[0])
        names = list(predictions)
        answers = contract.drawing_answers([predictions[n].answer for n in names], score, self.rule)
        below = self.rule["not_a_digit_below"]
        drawing = Drawing("not a digit" if score < below else "digit", score, below)
        return {
            n: dataclasses.replace(predictions[n], answer=str(a))
            for n, a in zip(names, answers, strict=True)
        }, drawing


def as_model_set(predictors: Mapping[str, Predictor]) -> ModelSet:
    """The predictors as a ModelSet: themselves, or a plain mapping as a set without a gate."""
    return predictors if isinstance(predictors, ModelSet) else ModelSet(predictors)


def check_members(rule: dict, predictors: Mapping[str, Predictor], gate: Predictor) -> None:
    """The rule must name exactly these files: every served model, by its sha256."""
    loaded = {name: p.sha256 for name, p in predictors.items()}
    if rule["members"] != loaded:
        raise ModelLoadError(
            f"{gate.path}: its drawing rule was fitted with other model files than "
            f"{', '.join(p.path.name for p in predictors.values())} (re-exported since?): "
            f"export the gate again (`make export`) or remove {gate.path.name}"
        )


def gate_rule(gate: Predictor) -> dict:
    """The drawing rule the gate's manifest carries for the gate file's own variant."""
    where = f"{gate.path}: the gate"
    if gate.manifest is None:
        raise ModelLoadError(f"{where} needs its manifest {contract.GATE_NAME}.json beside it")
    variant = gate.manifest_entry.get("variant")
    rules = gate.manifest.get("drawing_rule")
    if not isinstance(rules, dict) or variant not in rules:
        raise ModelLoadError(f"{where}'s manifest has no drawing rule for its {variant} file")
    try:
        return contract.check_drawing_rule(rules[variant])
    except ValueError as e:
        raise ModelLoadError(f"{where}'s drawing rule is not usable: {e}") from None


def load_models(models_dir, *, threads: int = 1, variant: str | None = None) -> ModelSet:
    """MODELS_DIR's mlp and cnn files of one variant (None: the float files, else, in a folder
    that holds only the int8 files such as a small release, the int8 ones), each checked against
    its manifest, with the gate of the same variant when it is there.

    Raises:
        FileNotFoundError: the directory or one of the models is missing.
        ModelLoadError: a model file is not a usable flaxdigits export, or the gate's rule does
            not belong to these files.
    """
    directory = Path(models_dir)
    variant = _variant(directory, variant)
    files = {name: directory / contract.model_file(name, variant) for name in contract.MODEL_NAMES}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        where = (
            f"no models directory {directory}"
            if not directory.is_dir()
            else f"{directory} has no {' or '.join(missing)}"
        )
        raise FileNotFoundError(
            f"{where}: train and export the models first with `make all` "
            f"(or `flaxdigits export RUN_DIR --out {directory}/NAME.onnx` for mlp and cnn)"
        )
    predictors = {name: Predictor(path, threads=threads) for name, path in files.items()}
    gate_path = directory / contract.model_file(contract.GATE_NAME, variant)
    if not gate_path.is_file():
        return ModelSet(predictors)
    gate = Predictor(gate_path, threads=threads)
    return ModelSet(predictors, gate, gate_rule(gate))


def _variant(directory: Path, variant: str | None) -> str:
    """The variant to load: the one asked for, else float32 unless the folder holds only the
    int8 files of both models."""
    if variant is not None:
        if variant not in contract.VARIANT_SUFFIXES:
            known = ", ".join(contract.VARIANT_SUFFIXES)
            raise ValueError(f"variant {variant!r}: choose one of {known}")
        return variant

    def every(v: str) -> bool:
        return all((directory / contract.model_file(n, v)).is_file() for n in contract.MODEL_NAMES)

    return "int8" if every("int8") and not every("float32") else "float32"
