"""The training job: one frozen config, and the recipes (frozen sets of values) it names.

A recipe says how a model is trained, never what the model is: both recipes train the same two
architectures into the same exported graphs. `original` is the original study's training (Adam
1e-3 constant, batch 32, no augmentation); `robust` adds on-device augmentation (augment.py), a
warm-up + cosine learning-rate schedule and, for the CNN, dropout, for the digits people really
draw.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from flaxdigits.core import contract

VAL_SIZE_FRACTION = 0.1
PRECISIONS = contract.PRECISIONS  # a job's compute dtype: "float32", or mixed "bfloat16"
# The CNN's training kernels (models.conv_pool.KERNELS), by the name a recipe gives. A
# checkpoint from before recipes named one trained with "gather".
CONV_POOLS = ("strided", "gather", "reference")
CONV_POOL_BEFORE = "gather"


@dataclasses.dataclass(frozen=True)
class Augment:
    """Random distortions of a share of every training batch, drawn on the device per step.

    Each augmented image has its strokes thickened or thinned, is rotated and slanted, then
    re-centred the MNIST way (ink box fitted to 20 px, centre of mass at the centre) as the
    page's preprocessing treats a drawing of any pen width, and jittered in scale and position.
    """

    share: float  # of each batch augmented at the start of training ...
    share_end: float  # ... and at its end (linear in between): the last epochs are milder
    rotation: float  # degrees, uniform in [-rotation, rotation]
    scale: tuple[float, float]  # uniform factor range (after re-centring)
    slant: float  # shear x += slant * y, uniform in [-slant, slant]
    shift: float  # pixels, uniform in [-shift, shift] on each axis (after re-centring)
    thickness: tuple[float, float]  # stroke change, px per side (< 0 thins), before the refit
    recentre: bool = True
    elastic: float = 0.0  # px: largest move of a smooth random displacement field (0: none)
    # The augmentable rows the share leaves out are distorted too, mildly: rotation, slant,
    # stroke change and elastic move scaled by this (scale and shift jitter in full); 0: clean.
    mild: float = 0.0

    def __post_init__(self):
        for name in ("share", "share_end", "mild"):
            _check_unit(f"augment.{name}", getattr(self, name))
        low, high = self.scale
        if not 0 < low <= high:
            raise ValueError(f"augment.scale must be 0 < low <= high, got {self.scale}")
        low, high = self.thickness
        if not low <= high:
            raise ValueError(f"augment.thickness must be low <= high, got {self.thickness}")
        for name in ("rotation", "slant", "shift", "elastic"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"augment.{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dataclasses.asdict(self)


# The kinds of non-digits training/outliers.py draws.
OUTLIER_KINDS = ("scribble", "letter", "blob", "pair")


@dataclasses.dataclass(frozen=True)
class Outliers:
    """Non-digits added to every training batch (training/outliers.py), with a loss that pushes
    the model's answer on them towards flat (outlier exposure, Hendrycks et al. 2019): the model
    keeps its 10 outputs, and a flat answer is what "that is not a digit" is read from."""

    share: float  # non-digits per step, as a share of the batch (added to it, not replacing)
    weight: float = 0.5  # of their loss (cross-entropy to the uniform answer) beside the digits'
    kinds: tuple[str, ...] = OUTLIER_KINDS  # which kinds, in equal shares
    # The share of training done before their loss counts (0: from the first step): the robust
    # augmentation's share of heavily distorted digits falls over training, and non-digits
    # overlap those most. Before it, the rows are drawn (the same shapes) and left out.
    start: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "kinds", tuple(self.kinds))  # a list from JSON: the same
        _check_unit("outliers.start", self.start)
        if self.start >= 1.0:
            raise ValueError(f"outliers.start must be below 1, got {self.start}")
        if not self.kinds or set(self.kinds) - set(OUTLIER_KINDS):
            raise ValueError(f"outliers.kinds: one or more of {OUTLIER_KINDS}, got {self.kinds}")
        if not 0.0 < self.share <= 1.0:
            raise ValueError(f"outliers.share must be in (0, 1], got {self.share}")
        if not self.weight > 0:
            raise ValueError(f"outliers.weight must be positive, got {self.weight}")

    def rows(self, batch: int) -> int:
        """Non-digits added to a batch of `batch` digits."""
        return max(1, math.ceil(self.share * batch - 1e-9))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a model is trained: the defaults a TrainConfig of this recipe starts from."""

    epochs: int
    batch_size: int
    learning_rate: float  # the peak, with a schedule
    schedule: str  # "constant" | "warmup_cosine"
    warmup_epochs: float = 0.0
    end_fraction: float = 1.0  # final learning rate / peak (warmup_cosine)
    augment: Augment | None = None
    # Training only: this share of the hidden Dense layer's inputs zeroed per image (the rest
    # scaled up to keep their sum); evaluation, export and serving run the plain model.
    dropout: float = 0.0
    # The compute precision a job of this recipe trains in unless told otherwise (one of
    # PRECISIONS), chosen per recipe and model by measurement
    # (docs/experiments/2026-12-05-mixed-precision.md).
    precision: str = "float32"
    # Non-digits in every batch (training/outliers.py); they come with the augmentation.
    outliers: Outliers | None = None
    # The CNN's training kernel (CONV_POOLS): how its conv+pool gradient is computed, never
    # what it computes (~1e-7 relative: another summation order; the MLP has no conv).
    conv_pool: str = "strided"

    def __post_init__(self):
        if self.conv_pool not in CONV_POOLS:
            raise ValueError(f"unknown conv_pool {self.conv_pool!r}; choose one of {CONV_POOLS}")
        if self.outliers is not None and self.augment is None:
            raise ValueError("outliers need a recipe with augmentation (they are drawn with it)")
        if not 0.0 <= self.dropout < 1.0:  # 1 would zero every input and divide by zero
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        check_precision(self.precision)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dataclasses.asdict(self)


def check_precision(precision: str) -> str:
    """precision if it is one of PRECISIONS, else a ValueError that lists them."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    return precision


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


# The original recipe trains its CNN with the kernel of before the strided one: its runs, and
# the seed comparison's published figures, stay what they were bit for bit (the strided kernel
# sums in another order: 98.48 / 98.67% at 5 / 10 epochs instead of 98.59 / 98.69%, within
# seed noise, and ~16% faster per step; docs/experiments/2026-12-05-training-step.md).
_ORIGINAL = Recipe(
    epochs=5, batch_size=32, learning_rate=1e-3, schedule="constant", conv_pool="gather"
)
_ROBUST = Recipe(
    epochs=40,
    batch_size=128,
    learning_rate=3e-3,
    schedule="warmup_cosine",
    warmup_epochs=1.0,
    end_fraction=0.01,
    augment=Augment(
        share=0.7,
        share_end=0.0,
        rotation=40.0,
        scale=(0.9, 1.1),
        slant=0.35,
        shift=1.5,
        thickness=(-1.0, 2.5),
        mild=0.5,  # the rows the share leaves out: distorted at half strength, not clean
    ),
    # The heavy share lets the CNN memorise its clean rows through the 5408 x 100 layer
    # (99.98% on its own clean training digits): dropout there, with the mild tier, lifts the
    # test set from 99.14% to 99.31% (means of three random seeds;
    # docs/experiments/2026-12-03-robust-cnn-recipe.md).
    dropout=0.5,
    # No non-digits (outliers=None): outlier exposure taught the CNN to say "not a digit" (AUROC
    # 0.98 against held-out non-digits, against 0.95 without) but cost it 0.2-0.35 points of clean
    # accuracy and 1-6 points on digits rotated by 30-45° in all three variants tried
    # (docs/experiments/2026-12-05-not-a-digit.md); the served figures come first.
)
# recipe -> model -> values. The MLP, with no convolution to share what it learns across
# positions, pays for heavy distortion in clean accuracy: its robust recipe is milder.
RECIPES: dict[str, dict[str, Recipe]] = {
    "original": {"mlp": _ORIGINAL, "cnn": _ORIGINAL},
    "robust": {
        "mlp": dataclasses.replace(
            _ROBUST,
            batch_size=64,
            learning_rate=2e-3,
            augment=dataclasses.replace(
                _ROBUST.augment,
                share=0.5,
                rotation=30.0,
                slant=0.3,
                thickness=(-0.5, 1.2),
                mild=0.0,
            ),
            dropout=0.0,
        ),
        "cnn": _ROBUST,
    },
    # The gate (contract.GATE_NAME): the robust CNN's recipe for 10 epochs with one generated
    # non-digit per 8 digits at weight 0.5. Its answers are worse digits (98.6-98.8% clean): it
    # only votes, with the served models, on "is this a digit" (AUROC 0.989-0.990 together,
    # against 0.952 for the served CNN alone; docs/experiments/2026-12-05-not-a-digit.md).
    "gate": {"cnn": dataclasses.replace(_ROBUST, epochs=10, outliers=Outliers(0.125, 0.5))},
}


def _check_recipe_model(recipe: str, model: str) -> str:
    """The model, if the recipe has values for it (the gate recipe trains the CNN only)."""
    if model not in RECIPES[recipe]:
        raise ValueError(f"the {recipe} recipe trains {' and '.join(RECIPES[recipe])} only")
    return model


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training job. Defaults reproduce the original study's recipe."""

    model: str = "cnn"
    recipe: str = "original"  # one of RECIPES: schedule and augmentation come from it
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    val_fraction: float = VAL_SIZE_FRACTION  # the LAST 10% of the 60k, as Keras' validation_split
    # Evaluation chunk. 250 keeps the CNN's conv output (250x26x26x32 float32, 22 MB) near a
    # CPU's last-level cache (BENCHMARKS.md has the measurement). It does not affect training.
    eval_batch_size: int = 250
    precision: str = "float32"  # the compute dtype of the training step (PRECISIONS)

    def __post_init__(self):
        contract.check_model_name(self.model)
        # A run or checkpoint from before the rename says "seed": the same recipe.
        object.__setattr__(self, "recipe", contract.recipe_name(self.recipe))
        check_precision(self.precision)
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {sorted(RECIPES)}")
        _check_recipe_model(self.recipe, self.model)
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be positive")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    @classmethod
    def for_recipe(cls, recipe: str, **overrides: Any) -> TrainConfig:
        """A config with the recipe's epochs, batch size, learning rate and precision, unless
        overridden (an override of None keeps the recipe's value)."""
        recipe = contract.recipe_name(recipe)
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
        model = contract.check_model_name(overrides.get("model") or cls.model)
        r = RECIPES[recipe][_check_recipe_model(recipe, model)]
        values = {"epochs": r.epochs, "batch_size": r.batch_size, "learning_rate": r.learning_rate}
        values["precision"] = r.precision
        values |= {k: v for k, v in overrides.items() if v is not None}
        return cls(recipe=recipe, **values)

    @property
    def recipe_values(self) -> Recipe:
        """The recipe this job follows."""
        return RECIPES[self.recipe][self.model]

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

    def resume_conflicts(
        self, saved: TrainConfig, precision_change: bool = False
    ) -> dict[str, tuple[Any, Any]]:
        """{key: (saved, wanted)} of the settings that stop this job resuming `saved`'s.

        Only the epoch count may grow, and only with a constant learning rate (a schedule is laid
        over the whole run); eval_batch_size may differ too (it chunks evaluation and leaves the
        training unchanged); the precision only when precision_change says so (the rest of the
        run then trains in the other one). A checkpoint from before recipes existed is the original
        recipe's; one from before precisions existed trained in float32.
        """
        free = {"eval_batch_size"}
        if self.recipe_values.schedule == "constant":
            free.add("epochs")
        if precision_change:
            free.add("precision")
        return {
            k: (v, getattr(self, k))
            for k, v in saved.to_dict().items()
            if k not in free and getattr(self, k) != v
        }

    def recipe_conflicts(self, saved: dict[str, Any] | None) -> dict[str, tuple[Any, Any]]:
        """{key: (saved, wanted)} of the recipe values (`augment.FIELD` for augmentation's) that
        differ from those a checkpoint was trained with, as its meta's `recipe_values` holds
        them: the recipe was edited in config.py between the save and a resume. A checkpoint
        from before its recipe values were saved (None) has nothing to compare. The recipe's
        precision is only its default: the job's own (config.precision) is what resume checks.
        A checkpoint from before recipes named the CNN's training kernel trained with
        CONV_POOL_BEFORE.
        """
        if saved is None:
            return {}
        saved = {"conv_pool": CONV_POOL_BEFORE} | saved
        wanted = _json(self.recipe_values.to_dict())
        return _flat_diff(
            {k: v for k, v in saved.items() if k != "precision"},
            {k: v for k, v in wanted.items() if k != "precision"},
        )


def _json(value: Any) -> Any:
    """value as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _flat_diff(saved: Any, wanted: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved, wanted)} of the leaves where two JSON values differ."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        diff: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(saved) | set(wanted)):
            diff |= _flat_diff(saved.get(key), wanted.get(key), f"{prefix}{key}.")
        return diff
    return {} if saved == wanted else {prefix.rstrip("."): (saved, wanted)}
