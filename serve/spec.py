"""The contract between export and serve: graph I/O names, metadata keys, preprocessing spec.

Pure constants, no imports beyond the standard library: export/ writes these, serve/ checks them.
"""

from __future__ import annotations

# Graph I/O. Input: float32 [N, 28, 28, 1], values in [0, 1], white digit on black (MNIST layout).
INPUT_NAME = "image"
INPUT_SHAPE = ("N", 28, 28, 1)
OUTPUT_NAME = "probabilities"  # float32 [N, 10], softmax inside the graph
LABELS = tuple(str(d) for d in range(10))

# What a model expects its input to look like. serve/ refuses a model whose spec it does not know.
# Bump the version whenever the meaning of the model input changes (layout, range, polarity).
PREPROCESSING_SPEC = "flaxdigits.mnist28.v1"
KNOWN_PREPROCESSING_SPECS = frozenset({PREPROCESSING_SPEC})

# Highest opset/IR we emit: onnxruntime >= 1.17 (and older ARM builds) load these.
MAX_OPSET = 21
MAX_IR_VERSION = 10

# metadata_props keys written by export/ into every .onnx file.
META_MODEL = "flaxdigits.model"  # "mlp" | "cnn"
META_PARAMS = "flaxdigits.params"  # parameter count, decimal string
META_TEST_ACCURACY = "flaxdigits.test_accuracy"  # of this file on the 10k test set
META_TRAIN_CONFIG = "flaxdigits.train_config"  # JSON: epochs, batch_size, seed, ...
META_PREPROCESSING = "flaxdigits.preprocessing"  # PREPROCESSING_SPEC
META_LABELS = "flaxdigits.labels"  # JSON list "0".."9"
META_INPUT = "flaxdigits.input"  # human-readable layout and value range
META_VERSION = "flaxdigits.version"
META_JAX2ONNX_VERSION = "jax2onnx.version"
META_CHECKPOINT_SHA256 = "flaxdigits.checkpoint_sha256"
META_VARIANT = "flaxdigits.variant"  # "float32" | "int8"

INPUT_DESCRIPTION = "image: float32 [N,28,28,1] NHWC, values in [0,1], white digit on black"

# Manifest written next to NAME.onnx as NAME.json.
MANIFEST_SCHEMA = "flaxdigits.manifest.v1"


def manifest_path_for(model_path: str) -> str:
    """NAME.json for NAME.onnx and NAME.int8.onnx alike."""
    stem = model_path[: -len(".onnx")] if model_path.endswith(".onnx") else model_path
    if stem.endswith(".int8"):
        stem = stem[: -len(".int8")]
    return stem + ".json"
