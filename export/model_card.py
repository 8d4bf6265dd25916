"""MODEL_CARD.md of a release: data, recipe, parameters, every measured accuracy, int8 deltas,
latency with the machine named, intended use, limits and license. Every figure is read, never
re-derived: test accuracies from each file's ONNX metadata and manifest, canvas and robustness
accuracies from reports that measured these very bytes (the sha256 they record for each model
file is the file's), latency as export/release.py measured it. A report's figure for other
bytes, or a report that names no bytes, is not quoted: the card says the file was not measured.
The answers and drawing rule sections are export/card_answers.py; matching a report's figures
to the bytes they measured is export/card_figures.py. Standard library and flaxdigits.core
(contract, tables) only.
"""

from __future__ import annotations

from typing import Any

from flaxdigits.core import contract
from flaxdigits.core.tables import markdown_table
from flaxdigits.export.card_answers import answers_section, drawing_section
from flaxdigits.export.card_figures import (
    canvas_by_bytes,
    measured,
    models_by_bytes,
    not_measured,
    pct,
    release_digests,
)

VARIANTS = tuple(contract.VARIANT_SUFFIXES)  # float32, int8
LICENSE = "Apache-2.0"
# Shown on the card; the graphs themselves are the source of truth (export/onnx_graph.py).
ARCHITECTURE = {
    "mlp": "Flatten(784) -> Dense 128 ReLU -> Dense 10 -> softmax",
    "cnn": "Conv 32 3x3 VALID ReLU -> MaxPool 2x2 -> Flatten 5,408 -> Dense 100 ReLU -> "
    "Dense 10 -> softmax",
}

# The card's fixed text: the data every model was trained on, and what the models are for.
DATA = (
    "",
    "## Data",
    "",
    "MNIST (LeCun, Cortes and Burges): 60,000 training and 10,000 test images, 28x28 grey,",
    "white digit on black. The files were verified by the sha256 of the four canonical IDX",
    "files before training. Training used the first 90% of the training set; the last 10%",
    "(6,000 images) was held out for validation. Test accuracy below is on all 10,000 test",
    "images, which were never used for training or model selection.",
)
USE_LIMITS_LICENSE = (
    "",
    "## Intended use",
    "",
    "Reading single handwritten digits 0-9 that a person drew on a canvas or wrote on paper,",
    "one digit per image, for demonstrations, teaching and small embedded or edge",
    "applications on CPU. The int8 files are for boards where size and memory matter.",
    "",
    "## Limits",
    "",
    "- One digit per image, 0-9 only. A file with an answer rule answers 'not a digit' to",
    "  much that is not one, but not to all (see Answers above): some letters, symbols",
    "  and doodles still get a digit. A file without one gives a digit to anything but an",
    "  empty canvas (which the preprocessing refuses).",
    "- Trained on MNIST alone: mostly North-American writers of the 1990s, centred white-on-",
    "  black digits. Styles far from that (heavily slanted, decorative, or cut-off digits)",
    "  are read less well; see the robustness table for how accuracy falls with distortion.",
    "- The confidence is calibrated on MNIST-like digits (the temperature above); on input",
    "  far from them it can still be high. A file without a rule gives the plain softmax.",
    "- The int8 files disagree with the float files on a few images (see the deltas above).",
    "- Not for decisions about people, identity or money (cheques, forms) without a human",
    "  check.",
    "",
    "## License",
    "",
    f"The model files and this card: {LICENSE} (the flaxdigits license). They were trained",
    "on MNIST, which its authors make available under the terms of CC BY-SA 3.0.",
    "",
)


def file_accuracy(variant: dict) -> float | None:
    """The file's test accuracy: its ONNX metadata, else its manifest entry."""
    value = variant["metadata"].get(contract.META_TEST_ACCURACY)
    try:
        return float(value) if value is not None else float(variant["entry"]["test_accuracy"])
    except (KeyError, TypeError, ValueError):
        return None


def model_card(
    version: str,
    described: dict[str, dict],
    reports: dict[str, Any],
    timings: dict | None,
    gate: dict | None = None,
) -> str:
    """MODEL_CARD.md: data, recipe, parameters, every measured accuracy, int8 deltas, the answer
    rules and the gate's drawing rule (gate: described as a model, with its "rule" per variant;
    None without a gate), latency with the machine, intended use, limits and license."""
    every = described | ({contract.GATE_NAME: gate} if gate else {})
    return "\n".join(
        [
            *_intro(version, described, gate),
            *_files_section(every),
            *DATA,
            *_training_section(every),
            *_accuracy_section(described, reports),
            *answers_section(described, reports),
            *drawing_section(described, gate, reports),
            *_latency_section(timings),
            *USE_LIMITS_LICENSE,
        ]
    )


def _intro(version: str, described: dict[str, dict], gate: dict | None) -> list[str]:
    """The title, what the models are, their input and output and the preprocessing."""
    shipped = sorted({v for d in described.values() for v in d["variants"]})
    if shipped == ["int8"]:
        each = "each as a statically quantized int8 file (the float32 files are left out)."
    elif shipped == ["float32"]:
        each = "each as a float32 file."
    else:
        each = "each as a float32 file and a statically quantized int8 file."
    lines = [
        f"# flaxdigits models {version}",
        "",
        "Handwritten-digit classifiers (0-9) trained on MNIST with JAX/Flax and exported to ONNX:",
        f"an MLP and a small CNN, {each}",
        f"Input: {contract.INPUT_DESCRIPTION}; output `{contract.OUTPUT_NAME}`: float32 [N, 10]",
        f"softmax probabilities. Preprocessing spec `{contract.PREPROCESSING_SPEC}`: run images",
        "through `flaxdigits.serve.runtime.preprocess` (or `flaxdigits predict`), which centres",
        "the ink the way MNIST was made.",
    ]
    if gate is None:
        return lines
    files = ", ".join(f"models/{var['file']}" for var in gate["variants"].values())
    return lines + [
        "",
        f"With them, the gate ({files}):",
        "a third CNN, trained with generated non-digits, whose own digit is never shown; it",
        "decides with the two that a drawing is 'not a digit' (see Drawing rule).",
    ]


def _files_section(described: dict[str, dict]) -> list[str]:
    """Every model file with its variant, size, sha256 and test accuracy; how to check them."""
    rows = []
    for d in described.values():
        for v, var in d["variants"].items():
            size, digest = var["entry"]["size"], var["entry"]["sha256"]
            accuracy = pct(file_accuracy(var))
            rows.append([f"models/{var['file']}", v, f"{size:,}", f"`{digest[:16]}…`", accuracy])
    header = ["file", "variant", "bytes", "sha256", "test accuracy"]
    return [
        "",
        "## Files",
        "",
        markdown_table(header, rows, align="llrlr"),
        "",
        "Check them with `flaxdigits verify RELEASE` (or `sha256sum -c SHA256SUMS` in the",
        "unpacked folder); `flaxdigits serve` and `flaxdigits predict` refuse a release whose",
        "checksums do not all match, before reading any model.",
    ]


def _training_section(described: dict[str, dict]) -> list[str]:
    """Each model's architecture, parameters and recipe (from its manifest), its augmentation
    and dropout where it had any."""
    rows = []
    for name, d in described.items():
        m = d["manifest"]
        recipe, config = m.get("recipe") or {}, m.get("train_config") or {}
        rows.append(
            [
                name,
                ARCHITECTURE.get(name) or ARCHITECTURE.get(m.get("model"), ""),
                f"{m.get('params', 'n/a'):,}",
                contract.recipe_name(recipe.get("name", "n/a")),
                config.get("epochs", "n/a"),
                config.get("batch_size", "n/a"),
                config.get("learning_rate", "n/a"),
                recipe.get("schedule", "n/a"),
                training_precision(m),
            ]
        )
    header = ["model", "architecture", "parameters", "recipe", "epochs", "batch", "peak lr"]
    table = markdown_table([*header, "schedule", "training precision"], rows, align="llrlrrrll")
    out = ["", "## Models and training", "", table]
    augments = {n: (d["manifest"].get("recipe") or {}).get("augment") for n, d in described.items()}
    for name, augment in augments.items():
        if augment:
            shown = ", ".join(f"{k} {v}" for k, v in augment.items())
            out.append(f"\n{name} augmentation (on the device, a share of every batch): {shown}.")
    for name, d in described.items():
        rate = (d["manifest"].get("recipe") or {}).get("dropout")
        if rate:
            out.append(
                f"\n{name} dropout (training only, on the hidden Dense layer's inputs): {rate}; "
                "the files hold the plain model."
            )
    return out + [
        "",
        "Adam; the random seed and every setting are in each manifest (`train_config`, "
        "`recipe`). The training precision is the compute dtype of the training step "
        "(bfloat16: mixed precision, with float32 parameters); every file holds float32 (or "
        "int8) weights.",
    ]


def training_precision(manifest: dict) -> str:
    """The precision a manifest's model was trained in; a manifest from before precisions were
    recorded trained in float32."""
    config = manifest.get("train_config") or {}
    return manifest.get("training_precision") or config.get("precision") or "float32"


def _accuracy_section(described: dict[str, dict], reports: dict[str, Any]) -> list[str]:
    rows = []
    for name, d in described.items():
        f, q = (file_accuracy(d["variants"][v]) if v in d["variants"] else None for v in VARIANTS)
        delta = "n/a" if f is None or q is None else f"{100 * (q - f):+.2f}"
        parity = (d["variants"].get("float32") or {"entry": {}})["entry"].get("parity") or {}
        diff = parity.get("max_abs_diff")
        shown = "n/a" if diff is None else f"{diff:.1e}"
        rows.append([name, pct(f), pct(q), delta, shown, parity.get("argmax_mismatches", "n/a")])
    header = ["model", "float32", "int8", "int8 delta", "float max abs diff vs JAX"]
    return [
        "",
        "## Measured accuracy",
        "",
        "Test set (10,000 images): from each file's ONNX metadata; int8 delta in points. Parity:",
        "the float file's largest probability difference from the JAX model on the test set",
        "(from the manifest, checked by the export).",
        "",
        markdown_table([*header, "argmax diffs"], rows),
        *_canvas_rows(described, reports),
        *_robustness_rows(described, reports),
    ]


def _canvas_rows(described: dict[str, dict], reports: dict[str, Any]) -> list[str]:
    if missing := not_measured(reports, "canvas", "Canvas accuracy", "canvas_accuracy.json"):
        return missing
    where, doc = reports["canvas"]
    found, lines = measured(
        release_digests(described),
        canvas_by_bytes(doc),
        where,
        "Canvas accuracy",
        "flaxdigits canvas-eval",
    )
    if not found:
        return lines
    methods = contract.PREPROCESS_METHODS
    rows = [[file, *(pct(accuracy.get(m)) for m in methods)] for file, accuracy in found.items()]
    return [
        "",
        f"MNIST test digits redrawn as drawing-canvas images ({_count(doc)} canvases, {where}):",
        "",
        markdown_table(["file", *(f"`{m}` preprocessing" for m in methods)], rows),
        *lines,
    ]


def _robustness_rows(described: dict[str, dict], reports: dict[str, Any]) -> list[str]:
    if missing := not_measured(reports, "robustness", "Robustness", "robustness.json"):
        return missing
    where, doc = reports["robustness"]
    models, lines = measured(
        release_digests(described),
        models_by_bytes(doc),
        where,
        "Robustness",
        "flaxdigits robustness",
    )
    if not models:
        return lines
    out = [
        "",
        f"Deformed test digits ({_count(doc)} per level, re-centred by the `mnist`",
        f"preprocessing; {where}):",
    ]
    for distortion, spec in (doc.get("grid") or {}).items():
        levels = spec.get("levels", [])
        rows = []
        for file, model in models.items():
            values = list((model.get("accuracy") or {}).get(distortion, []))[: len(levels)]
            rows.append([file, *map(pct, values), *["n/a"] * (len(levels) - len(values))])
        table = markdown_table(["file", *(f"{v:g}" for v in levels)], rows)
        out += ["", f"{distortion} ({spec.get('unit', '')}):", "", table]
    return out + lines


def _latency_section(timings: dict | None) -> list[str]:
    if timings is None:
        return ["", "## Latency", "", "Not measured for this release (`--no-latency`)."]
    out = [
        "",
        "## Latency",
        "",
        "onnxruntime CPU, 1 intra-op thread, median of 5 timed blocks, measured when the release",
        f"was made on: {timings['machine']}. Other machines differ; measure yours with",
        "`flaxdigits benchmark`.",
        "",
    ]
    rows = [
        [r["file"], r["batch"], f"{r['ms']:.3f}", f"{r['images_per_s']:,}"] for r in timings["rows"]
    ]
    return [*out, markdown_table(["file", "batch", "ms per call", "images/s"], rows)]


def _count(doc: dict) -> str:
    """A report's image count, with thousands separators."""
    n = doc.get("n")
    return f"{n:,}" if isinstance(n, int) else "?"
