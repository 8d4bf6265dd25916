"""The training job: one frozen config with its defaults in one place."""

from __future__ import annotations

import dataclasses
from typing import Any

from flaxdigits import contract

VAL_SIZE_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training job. Defaults reproduce the seed experiment's recipe."""

    model: str = "cnn"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    val_fraction: float = VAL_SIZE_FRACTION  # the LAST 10% of the 60k, as Keras' validation_split
    # Evaluation chunk. 250 keeps the CNN's conv output (250x26x26x32 float32, 22 MB) near a
    # CPU's last-level cache (BENCHMARKS.md has the measurement). It does not affect training.
    eval_batch_size: int = 250

    def __post_init__(self):
        contract.check_model_name(self.model)
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be positive")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    def steps_per_epoch(self, n_train: int) -> int:
        """Full batches per epoch (the remainder, different every epoch, is skipped)."""
        steps = n_train // self.batch_size
        if steps < 1:
            raise ValueError(f"batch size {self.batch_size} exceeds the {n_train} training images")
        return steps

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown training config keys {sorted(unknown)}")
        return cls(**d)

    def resume_conflicts(self, saved: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """{key: (saved, wanted)} of the settings that stop this job resuming `saved`'s.

        Only the epoch count may grow; eval_batch_size may differ too (it chunks evaluation and
        leaves the training unchanged).
        """
        return {
            k: (v, getattr(self, k))
            for k, v in saved.to_dict().items()
            if k not in ("epochs", "eval_batch_size") and getattr(self, k) != v
        }
