"""The contract every layer shares: model names, the model input and its scaling, labels, the
ONNX graph's I/O names, metadata keys, the preprocessing spec and methods, the manifest schema.

Standard library and numpy only: training, export and the JAX-free serve side all import it, and
nothing here imports any other flaxdigits module.
"""

from __future__ import annotations

import numpy as np

# The two compared architectures, in report and page order.
MODEL_NAMES = ("mlp", "cnn")
# How a model was trained (flaxdigits/training/config.py RECIPES): the same graphs either way.
# "original" reproduces the original study's training; "robust" is what the page serves; "gate"
# trains a CNN that also sees generated non-digits, used only to decide "not a digit" (GATE_NAME).
RECIPE_NAMES = ("original", "robust", "gate")
# The compute dtypes a model can be trained in, by JAX's names: "bfloat16" is mixed precision
# (bfloat16 forward and backward passes; float32 parameters, optimizer state, loss and softmax).
# Either way the exported files are float32 (and int8): the precision is metadata.
PRECISIONS = ("float32", "bfloat16")

# The model input: float32 [N, 28, 28, 1] NHWC, values in [0, 1], white digit on black (MNIST).
IMAGE_SIDE = 28
PIXEL_MAX = 255.0  # uint8 pixel value that maps to 1.0
INPUT_NAME = "image"
INPUT_SHAPE = ("N", IMAGE_SIDE, IMAGE_SIDE, 1)
OUTPUT_NAME = "probabilities"  # float32 [N, 10], softmax inside the graph
LABELS = tuple(str(d) for d in range(10))
INPUT_DESCRIPTION = "image: float32 [N,28,28,1] NHWC, values in [0,1], white digit on black"

# What a model expects its input to look like. serve/ refuses a model whose spec it does not know.
# Bump the version whenever the meaning of the model input changes (layout, range, polarity).
PREPROCESSING_SPEC = "flaxdigits.mnist28.v1"
KNOWN_PREPROCESSING_SPECS = frozenset({PREPROCESSING_SPEC})
# How a drawing becomes that input (serve/runtime/preprocess.py): "mnist" fits the ink into 20x20
# and centres it by mass, as MNIST was made; "box" pads the ink box to a square with 20% margins.
PREPROCESS_METHODS = ("mnist", "box")
# Names of before 0.2, still accepted: "seed" named both the original study's recipe and its
# preprocessing, and is kept for the random seed alone. Commands say so in one line when used.
RENAMED_RECIPES = {"seed": "original"}
RENAMED_METHODS = {"seed": "box"}
# The drawing canvas of the page and the static site, (width, height) in pixels.
CANVAS_SIZE = (400, 400)
DEFAULT_PREPROCESS_METHOD = "mnist"

# Highest opset/IR we emit: onnxruntime >= 1.17 (and older ARM builds) load these.
MAX_OPSET = 21
MAX_IR_VERSION = 10

# metadata_props keys written by export/ into every .onnx file.
META_MODEL = "flaxdigits.model"  # one of MODEL_NAMES
META_PARAMS = "flaxdigits.params"  # parameter count, decimal string
META_TEST_ACCURACY = "flaxdigits.test_accuracy"  # of this file on the 10k test set
META_TRAIN_CONFIG = "flaxdigits.train_config"  # JSON: recipe, epochs, batch_size, seed, ...
META_RECIPE = "flaxdigits.recipe"  # how the model was trained: one of RECIPE_NAMES
META_PRECISION = "flaxdigits.training_precision"  # its training's compute dtype: PRECISIONS
META_PREPROCESSING = "flaxdigits.preprocessing"  # PREPROCESSING_SPEC
META_LABELS = "flaxdigits.labels"  # JSON list "0".."9"
META_INPUT = "flaxdigits.input"  # human-readable layout and value range
META_VERSION = "flaxdigits.version"
META_JAX2ONNX_VERSION = "jax2onnx.version"
# sha256 of the trained state's arrays (training.checkpoint.state_digest), not of the checkpoint's
# files: the same for two trainings of one config, so the exported bytes are too. Files exported
# before carried "flaxdigits.checkpoint_sha256", the digest of the files, which changes with
# every save.
META_CHECKPOINT_STATE_SHA256 = "flaxdigits.checkpoint_state_sha256"
META_VARIANT = "flaxdigits.variant"  # one of VARIANT_SUFFIXES
# The exported files of a model NAME, by variant: NAME.onnx and NAME.int8.onnx (model_file).
VARIANT_SUFFIXES = {"float32": ".onnx", "int8": ".int8.onnx"}
META_ANSWER_RULE = "flaxdigits.answer_rule"  # JSON: ANSWER_RULE_KEYS (a file from before: none)

# What a model's answer is, from the largest of its (calibrated) probabilities, the confidence:
# "not a digit" below the rule's not_a_digit_below, "not sure" below not_sure_below, else
# "digit". The thresholds travel in each exported file (META_ANSWER_RULE); the predictor, the
# page, the predict CLI and the static site's JavaScript (web/answer.js) apply the same rule.
ANSWERS = ("digit", "not sure", "not a digit")
ANSWER_RULE_KEYS = ("temperature", "not_a_digit_below", "not_sure_below", "validation_rejected")
# A calibrated confidence under this is right less than 4 times in 5: "not sure".
NOT_SURE_BELOW = 0.8
# The share of the validation digits whose confidence falls under "not a digit": the threshold.
NOT_A_DIGIT_VALIDATION_SHARE = 0.005

# "Not a digit" for a drawing, from every served model together (issue 33): the gate, a CNN trained
# with non-digits (recipe "gate"), is exported as GATE_NAME.onnx beside mlp and cnn; its manifest
# carries a drawing rule per variant (DRAWING_RULE_KEYS), fitted on the validation digits with the
# very files it names by sha256 ("members"). The drawing's score (drawing_scores) is the smaller
# of the gate's confidence and the largest of the mean of all their calibrated probabilities (the
# members' and the gate's): a digit needs the gate sure and the models together sure of one
# digit. Under not_a_digit_below the drawing is "not a digit" and so is every model's answer;
# otherwise a model's own "not a digit" becomes "not sure" (drawing_answers). web/answer.js
# applies the same rule.
GATE_NAME = "gate"
DRAWING_RULE_KEYS = ("members", "not_a_digit_below", "validation_rejected")

# Manifest written next to NAME.onnx as NAME.json.
MANIFEST_SCHEMA = "flaxdigits.manifest.v1"


def check_model_name(name: str) -> str:
    """name if it is one of MODEL_NAMES, else a ValueError that lists them."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_NAMES)}")
    return name


def check_method(method: str) -> str:
    """The method's name (its old name renamed), if it is one of PREPROCESS_METHODS, else a
    ValueError that lists them."""
    method = RENAMED_METHODS.get(method, method)
    if method not in PREPROCESS_METHODS:
        raise ValueError(
            f"unknown preprocessing method {method!r}: expected one of {PREPROCESS_METHODS}"
        )
    return method


def recipe_name(recipe: str) -> str:
    """The recipe's name, its old name renamed (a model file or run made before the rename says
    "seed"); any other name is returned as it is, for the caller to check."""
    return RENAMED_RECIPES.get(recipe, recipe)


def scale_pixels(pixels, xp=np):
    """uint8 pixels (any shape) -> float32 in [0, 1]; xp is numpy or jax.numpy."""
    return xp.asarray(pixels).astype(xp.float32) / PIXEL_MAX


def to_model_input(images, xp=np):
    """uint8 images (N, 28, 28) -> the model input float32 (N, 28, 28, 1) in [0, 1]."""
    return scale_pixels(images, xp)[..., None]


def answer(confidence: float, rule: dict | None) -> str:
    """One of ANSWERS for a confidence under an answer rule (None: a file without one, whose
    every answer is a digit)."""
    if not rule:
        return "digit"
    if confidence < rule["not_a_digit_below"]:
        return "not a digit"
    if confidence < rule["not_sure_below"]:
        return "not sure"
    return "digit"


def answers(confidences, rule: dict | None) -> np.ndarray:
    """answer() of each of many confidences at once: an array of ANSWERS strings."""
    c = np.asarray(confidences, np.float64)
    if not rule:
        return np.full(c.shape, "digit", dtype=object)
    out = np.where(c < rule["not_sure_below"], "not sure", "digit").astype(object)
    out[c < rule["not_a_digit_below"]] = "not a digit"
    return out


def check_answer_rule(rule) -> dict:
    """The rule if it is a dict of ANSWER_RULE_KEYS with numbers in range (thresholds in
    [0, 1], not_a_digit_below <= not_sure_below, temperature > 0), else a ValueError."""
    if not isinstance(rule, dict) or set(rule) != set(ANSWER_RULE_KEYS):
        raise ValueError(f"an answer rule has exactly the keys {list(ANSWER_RULE_KEYS)}")
    if not all(isinstance(rule[k], int | float) and not isinstance(rule[k], bool) for k in rule):
        raise ValueError("an answer rule's values are numbers")
    low, high = rule["not_a_digit_below"], rule["not_sure_below"]
    if not (0.0 <= low <= high <= 1.0 and rule["temperature"] > 0):
        raise ValueError(f"an answer rule needs 0 <= {low} <= {high} <= 1 and temperature > 0")
    if not 0.0 <= rule["validation_rejected"] <= 1.0:
        raise ValueError("an answer rule's validation_rejected is a share in [0, 1]")
    return rule


def model_file(name: str, variant: str) -> str:
    """The file name of a model's variant: NAME.onnx or NAME.int8.onnx."""
    return name + VARIANT_SUFFIXES[variant]


def variant_of(file_name: str) -> str:
    """The variant of an exported file, from its name: "int8" for NAME.int8.onnx, else
    "float32"."""
    return "int8" if file_name.endswith(VARIANT_SUFFIXES["int8"]) else "float32"


def manifest_path_for(model_path: str) -> str:
    """NAME.json for NAME.onnx and NAME.int8.onnx alike."""
    stem = model_path[: -len(".onnx")] if model_path.endswith(".onnx") else model_path
    if stem.endswith(".int8"):
        stem = stem[: -len(".int8")]
    return stem + ".json"


def check_drawing_rule(rule) -> dict:
    """The rule if it is a dict of DRAWING_RULE_KEYS: members {model name: sha256 hex} naming
    MODEL_NAMES only, thresholds and shares in [0, 1]; else a ValueError."""
    if not isinstance(rule, dict) or set(rule) != set(DRAWING_RULE_KEYS):
        raise ValueError(f"a drawing rule has exactly the keys {list(DRAWING_RULE_KEYS)}")
    members = rule["members"]
    if (
        not isinstance(members, dict)
        or not members
        or not set(members) <= set(MODEL_NAMES)
        or not all(
            isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdef" for c in h)
            for h in members.values()
        )
    ):
        raise ValueError(f"a drawing rule's members map names of {list(MODEL_NAMES)} to sha256")
    for key in ("not_a_digit_below", "validation_rejected"):
        value = rule[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"a drawing rule's {key} is a number in [0, 1]")
    return rule


def drawing_scores(member_probabilities, gate_probabilities) -> np.ndarray:
    """The drawing rule's score of N drawings from the members' calibrated probabilities
    (M, N, 10) and the gate's (N, 10): the smaller of the gate's largest probability and the
    largest of the mean over all M + 1 models."""
    gate = np.asarray(gate_probabilities, np.float64)
    every = np.concatenate([np.asarray(member_probabilities, np.float64), gate[None]])
    return np.minimum(gate.max(-1), every.mean(0).max(-1))


def drawing_answers(model_answers, scores, rule: dict | None) -> np.ndarray:
    """Each model's answer (ANSWERS, any shape ending in N) under a drawing rule: "not a digit"
    where the drawing's score is under the rule's threshold, else its own answer with "not a
    digit" made "not sure". No rule: the answers as they are."""
    out = np.array(model_answers, dtype=object)
    if not rule:
        return out
    out[out == "not a digit"] = "not sure"
    rejected = np.broadcast_to(np.asarray(scores) < rule["not_a_digit_below"], out.shape)
    out[rejected] = "not a digit"
    return out
