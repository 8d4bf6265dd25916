"""`flaxdigits release`: the exported models, their manifests and a model card in one archive.

dist/flaxdigits-models-VERSION-DIGEST.tar.gz holds, under a folder of the same name:
models/{mlp,cnn}.onnx, .int8.onnx and .json (as `flaxdigits export --int8` wrote them), a
release.json index, MODEL_CARD.md and SHA256SUMS (every other file's sha256). DIGEST is the
start of SHA256SUMS's own sha256, so two different releases never share a name. The card's
figures are read, never re-derived: accuracies from each file's ONNX metadata and manifest,
canvas and robustness accuracies from reports/*.json where they describe these very files, and
latency measured here on the files with the machine named. Every model is checked against its
manifest before it is packed: a release is never made from a modified export.

onnxruntime and numpy only (no JAX): a release can be cut wherever the models are.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flaxdigits
from flaxdigits import contract, onnxrt, release_files
from flaxdigits.atomic import write_bytes_atomic
from flaxdigits.export.benchmark import benchmark
from flaxdigits.files import ReadError, read_capped

MAX_FILE_BYTES = release_files.MAX_MEMBER_BYTES
VARIANTS = ("float32", "int8")
LICENSE = "Apache-2.0"
# Shown on the card; the graphs themselves are the source of truth (export/onnx_graph.py).
ARCHITECTURE = {
    "mlp": "Flatten(784) -> Dense 128 ReLU -> Dense 10 -> softmax",
    "cnn": "Conv 32 3x3 VALID ReLU -> MaxPool 2x2 -> Flatten 5,408 -> Dense 100 ReLU -> "
    "Dense 10 -> softmax",
}
LATENCY_BATCHES = (1, 256)


class ReleaseError(ValueError):
    """The models or reports cannot make a release; the message says what to do."""


def file_name(name: str, variant: str) -> str:
    """mlp.onnx / mlp.int8.onnx: the file of a model variant in models/."""
    return f"{name}.onnx" if variant == "float32" else f"{name}.int8.onnx"


def build_release(
    models_dir="models",
    out_dir="dist",
    *,
    reports_dir="reports",
    version: str | None = None,
    latency: bool = True,
    log: Callable[[str], object] = print,
) -> Path:
    """Pack models_dir's float and int8 models of both architectures into a release archive.

    Args:
        models_dir: holds {mlp,cnn}.onnx, .int8.onnx and .json (`make export`).
        out_dir: where the archive is written (created if needed).
        reports_dir: canvas_accuracy.json and robustness.json are read from here when present
            and newer than the models they describe.
        version: the release version (default: the flaxdigits package version).
        latency: measure onnxruntime latency on this machine for the card.
        log: receives progress lines.

    Returns:
        The path of the archive written.

    Raises:
        ReleaseError: a model, int8 variant or manifest is missing or does not match.
    """
    models_dir, reports_dir = Path(models_dir), Path(reports_dir)
    version = version or flaxdigits.__version__
    release_files.check_relative_path(f"v{version}")
    files, described = _model_files(models_dir)
    reports = _reports(reports_dir, models_dir)
    timings = _latency(models_dir) if latency else None
    info = _info(version, described)
    files[release_files.INFO] = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    card = model_card(version, described, reports, timings, models_dir)
    files[release_files.CARD] = card.encode()
    digests = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    sums = release_files.format_sums(digests).encode()
    files[release_files.SUMS] = sums
    name = f"flaxdigits-models-{version}-{hashlib.sha256(sums).hexdigest()[:8]}"
    archive = release_files.pack(name, files)
    path = Path(out_dir) / f"{name}{release_files.ARCHIVE_SUFFIX}"
    try:
        write_bytes_atomic(path, archive)
    except OSError as e:
        raise ReleaseError(f"{path}: cannot write the release ({e.strerror or e})") from None
    log(f"{path}: {len(archive):,} bytes, {len(files)} files")
    return path


# ----------------------------------------------------------------------------------- reading


def _model_files(models_dir: Path) -> tuple[dict[str, bytes], dict[str, dict]]:
    """{release path: bytes} of every model file and manifest, and per model what the card
    needs: its manifest and, per variant, the file's entry and ONNX metadata."""
    files: dict[str, bytes] = {}
    described: dict[str, dict] = {}
    for name in contract.MODEL_NAMES:
        manifest_path = models_dir / f"{name}.json"
        raw = _read(manifest_path)
        try:
            manifest = json.loads(raw)
        except ValueError:
            raise ReleaseError(f"{manifest_path}: not JSON: re-export the model") from None
        if not isinstance(manifest, dict) or manifest.get("schema") != contract.MANIFEST_SCHEMA:
            raise ReleaseError(f"{manifest_path}: not a {contract.MANIFEST_SCHEMA} manifest")
        entries = {e.get("file"): e for e in manifest.get("files", []) if isinstance(e, dict)}
        files[f"models/{name}.json"] = raw
        variants = {}
        for variant in VARIANTS:
            file = file_name(name, variant)
            path = models_dir / file
            data = _read(path)
            entry = entries.get(file)
            if entry is None:
                raise ReleaseError(
                    f"{manifest_path} does not list {file}: export with --int8 (`make export`)"
                )
            if entry.get("sha256") != hashlib.sha256(data).hexdigest() or entry.get("size") != len(
                data
            ):
                raise ReleaseError(
                    f"{path} does not match its manifest {manifest_path.name}: the file was "
                    "modified; re-export it"
                )
            variants[variant] = {"file": file, "entry": entry, "metadata": _metadata(data, path)}
            files[f"models/{file}"] = data
        described[name] = {"manifest": manifest, "variants": variants}
    return files, described


def _read(path: Path) -> bytes:
    try:
        return read_capped(path, MAX_FILE_BYTES, "model file")
    except ReadError as e:
        raise ReleaseError(
            f"{path}: {e}: export both models with --int8 first (`make export`)"
        ) from None


def _metadata(data: bytes, path: Path) -> dict[str, str]:
    """The ONNX file's metadata_props, read by onnxruntime."""
    try:
        return dict(onnxrt.session(data).get_modelmeta().custom_metadata_map)
    except Exception as e:  # onnxruntime's own error types
        raise ReleaseError(f"{path}: onnxruntime cannot load it ({e}): re-export it") from None


def _reports(reports_dir: Path, models_dir: Path) -> dict[str, Any]:
    """The canvas and robustness reports that describe models_dir's files, newer than them."""
    newest_model = max(
        (models_dir / file_name(n, v)).stat().st_mtime
        for n in contract.MODEL_NAMES
        for v in VARIANTS
    )
    found: dict[str, Any] = {}
    for key, file in (("canvas", "canvas_accuracy.json"), ("robustness", "robustness.json")):
        path = reports_dir / file
        try:
            if path.stat().st_mtime < newest_model:
                found[f"{key}_skipped"] = f"{path} is older than the models"
                continue
            doc = json.loads(read_capped(path, 16 * 1024 * 1024, "report"))
        except (OSError, ValueError):
            continue
        found[key] = (str(path), doc)
    return found


def _same_file(reported: str, models_dir: Path, file: str) -> bool:
    try:
        return Path(reported).resolve() == (models_dir / file).resolve()
    except (OSError, ValueError):
        return False


def _latency(models_dir: Path) -> dict[str, Any]:
    """onnxruntime ms per call of every model file on this machine, and the machine."""
    paths = [models_dir / file_name(n, v) for n in contract.MODEL_NAMES for v in VARIANTS]
    rows = benchmark(paths, LATENCY_BATCHES, (1,), blocks=5, block_seconds=0.1)
    return {"rows": rows, "machine": machine()}


def machine() -> str:
    """This machine in words: CPU model, cores, architecture, OS, onnxruntime version."""
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} cores available, {platform.machine()}, {platform.system()}, "
        f"Python {platform.python_version()}, onnxruntime {onnxruntime.__version__}"
    )


# ---------------------------------------------------------------------------------- writing


def _info(version: str, described: dict[str, dict]) -> dict[str, Any]:
    """release.json: what the release holds, for programs (the card is for people)."""
    return {
        "schema": release_files.SCHEMA,
        "version": version,
        "flaxdigits_version": flaxdigits.__version__,
        "preprocessing": contract.PREPROCESSING_SPEC,
        "license": LICENSE,
        "models": {
            name: {
                "manifest": f"models/{name}.json",
                "params": d["manifest"].get("params"),
                "recipe": (d["manifest"].get("recipe") or {}).get("name"),
                "files": {
                    v: {
                        "path": f"models/{d['variants'][v]['file']}",
                        "test_accuracy": _accuracy(d["variants"][v]),
                    }
                    for v in VARIANTS
                },
            }
            for name, d in described.items()
        },
    }


def _accuracy(variant: dict) -> float | None:
    """The file's test accuracy: its ONNX metadata, else its manifest entry."""
    value = variant["metadata"].get(contract.META_TEST_ACCURACY)
    try:
        return float(value) if value is not None else float(variant["entry"]["test_accuracy"])
    except (KeyError, TypeError, ValueError):
        return None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def model_card(
    version: str,
    described: dict[str, dict],
    reports: dict[str, Any],
    timings: dict | None,
    models_dir: Path,
) -> str:
    """MODEL_CARD.md: data, recipe, parameters, every measured accuracy, int8 deltas, latency
    with the machine, intended use, limits and license."""
    out = [
        f"# flaxdigits models {version}",
        "",
        "Handwritten-digit classifiers (0-9) trained on MNIST with JAX/Flax and exported to ONNX:",
        "an MLP and a small CNN, each as a float32 file and a statically quantized int8 file.",
        f"Input: {contract.INPUT_DESCRIPTION}; output `{contract.OUTPUT_NAME}`: float32 [N, 10]",
        f"softmax probabilities. Preprocessing spec `{contract.PREPROCESSING_SPEC}`: run images",
        "through `flaxdigits.serve.preprocess` (or `flaxdigits predict`), which centres the ink",
        "the way MNIST was made.",
        "",
        "## Files",
        "",
        "| file | variant | bytes | sha256 | test accuracy |",
        "|---|---|---:|---|---:|",
    ]
    for d in described.values():
        for v in VARIANTS:
            var = d["variants"][v]
            out.append(
                f"| models/{var['file']} | {v} | {var['entry']['size']:,} | "
                f"`{var['entry']['sha256'][:16]}…` | {_pct(_accuracy(var))} |"
            )
    out += [
        "",
        "Check them with `flaxdigits verify RELEASE` (or `sha256sum -c SHA256SUMS` in the",
        "unpacked folder); `flaxdigits serve` and `flaxdigits predict` refuse a release whose",
        "checksums do not all match, before reading any model.",
        "",
        "## Data",
        "",
        "MNIST (LeCun, Cortes and Burges): 60,000 training and 10,000 test images, 28x28 grey,",
        "white digit on black. The files were verified by the sha256 of the four canonical IDX",
        "files before training. Training used the first 90% of the training set; the last 10%",
        "(6,000 images) was held out for validation. Test accuracy below is on all 10,000 test",
        "images, which were never used for training or model selection.",
        "",
        "## Models and training",
        "",
        "| model | architecture | parameters | recipe | epochs | batch | peak lr | schedule |",
        "|---|---|---:|---|---:|---:|---:|---|",
    ]
    for name, d in described.items():
        m = d["manifest"]
        recipe, config = m.get("recipe") or {}, m.get("train_config") or {}
        out.append(
            f"| {name} | {ARCHITECTURE.get(name, '')} | {m.get('params', 'n/a'):,} | "
            f"{recipe.get('name', 'n/a')} | {config.get('epochs', 'n/a')} | "
            f"{config.get('batch_size', 'n/a')} | {config.get('learning_rate', 'n/a')} | "
            f"{recipe.get('schedule', 'n/a')} |"
        )
    augments = {n: (d["manifest"].get("recipe") or {}).get("augment") for n, d in described.items()}
    for name, augment in augments.items():
        if augment:
            shown = ", ".join(f"{k} {v}" for k, v in augment.items())
            out.append(f"\n{name} augmentation (on the device, a share of every batch): {shown}.")
    out += ["", "Adam; seed and every setting are in each manifest (`train_config`, `recipe`)."]
    out += _accuracy_section(described, reports, models_dir)
    out += _latency_section(timings)
    out += [
        "",
        "## Intended use",
        "",
        "Reading single handwritten digits 0-9 that a person drew on a canvas or wrote on paper,",
        "one digit per image, for demonstrations, teaching and small embedded or edge",
        "applications on CPU. The int8 files are for boards where size and memory matter.",
        "",
        "## Limits",
        "",
        "- One digit per image, 0-9 only: letters, several digits or no digit still get a digit",
        "  (an empty canvas is refused by the preprocessing, other non-digits are not).",
        "- Trained on MNIST alone: mostly North-American writers of the 1990s, centred white-on-",
        "  black digits. Styles far from that (heavily slanted, decorative, or cut-off digits)",
        "  are read less well; see the robustness table for how accuracy falls with distortion.",
        "- The confidence is a softmax value, not a calibrated probability: it can be high on",
        "  input that is not a digit.",
        "- The int8 files disagree with the float files on a few images (see the deltas above).",
        "- Not for decisions about people, identity or money (cheques, forms) without a human",
        "  check.",
        "",
        "## License",
        "",
        f"The model files and this card: {LICENSE} (the flaxdigits license). They were trained",
        "on MNIST, which its authors make available under the terms of CC BY-SA 3.0.",
        "",
    ]
    return "\n".join(out)


def _accuracy_section(
    described: dict[str, dict], reports: dict[str, Any], models_dir: Path
) -> list[str]:
    out = [
        "",
        "## Measured accuracy",
        "",
        "Test set (10,000 images): from each file's ONNX metadata; int8 delta in points. Parity:",
        "the float file's largest probability difference from the JAX model on the test set",
        "(from the manifest, checked by the export).",
        "",
        "| model | float32 | int8 | int8 delta | float max abs diff vs JAX | argmax diffs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, d in described.items():
        f, q = (_accuracy(d["variants"][v]) for v in VARIANTS)
        delta = "n/a" if f is None or q is None else f"{100 * (q - f):+.2f}"
        parity = d["variants"]["float32"]["entry"].get("parity") or {}
        diff = parity.get("max_abs_diff")
        out.append(
            f"| {name} | {_pct(f)} | {_pct(q)} | {delta} | "
            f"{'n/a' if diff is None else f'{diff:.1e}'} | "
            f"{parity.get('argmax_mismatches', 'n/a')} |"
        )
    out += _canvas_rows(described, reports, models_dir)
    out += _robustness_rows(described, reports, models_dir)
    return out


def _canvas_rows(
    described: dict[str, dict], reports: dict[str, Any], models_dir: Path
) -> list[str]:
    if "canvas" not in reports:
        why = reports.get("canvas_skipped", "no reports/canvas_accuracy.json")
        return ["", f"Canvas accuracy: not measured for these files ({why})."]
    where, doc = reports["canvas"]
    models, accuracy = doc.get("models") or {}, doc.get("accuracy") or {}
    rows = []
    for d in described.values():
        for v in VARIANTS:
            file = d["variants"][v]["file"]
            stem = file[: -len(".onnx")]
            reported = models.get(stem)
            if stem in accuracy and reported and _same_file(reported, models_dir, file):
                cells = " | ".join(_pct(accuracy[stem].get(m)) for m in contract.PREPROCESS_METHODS)
                rows.append(f"| {file} | {cells} |")
    if not rows:
        return ["", f"Canvas accuracy: {where} does not describe these files."]
    methods = " | ".join(f"`{m}` preprocessing" for m in contract.PREPROCESS_METHODS)
    return [
        "",
        f"MNIST test digits redrawn as drawing-canvas images ({_count(doc)} canvases, {where}):",
        "",
        f"| file | {methods} |",
        "|---|" + "---:|" * len(contract.PREPROCESS_METHODS),
        *rows,
    ]


def _robustness_rows(
    described: dict[str, dict], reports: dict[str, Any], models_dir: Path
) -> list[str]:
    if "robustness" not in reports:
        why = reports.get("robustness_skipped", "no reports/robustness.json")
        return ["", f"Robustness: not measured for these files ({why})."]
    where, doc = reports["robustness"]
    wanted = {d["variants"][v]["file"] for d in described.values() for v in VARIANTS}
    models = {
        Path(m["file"]).name: m
        for m in (doc.get("models") or {}).values()
        if isinstance(m, dict)
        and isinstance(m.get("file"), str)
        and Path(m["file"]).name in wanted
        and _same_file(m["file"], models_dir, Path(m["file"]).name)
    }
    if not models:
        return ["", f"Robustness: {where} does not describe these files."]
    out = [
        "",
        f"Deformed test digits ({_count(doc)} per level, re-centred by the `mnist`",
        f"preprocessing; {where}):",
    ]
    for distortion, spec in (doc.get("grid") or {}).items():
        levels = spec.get("levels", [])
        out += [
            "",
            f"{distortion} ({spec.get('unit', '')}):",
            "",
            "| file | " + " | ".join(f"{v:g}" for v in levels) + " |",
            "|---|" + "---:|" * len(levels),
        ]
        for file in sorted(models, key=lambda f: (f.split(".")[0] != "mlp", ".int8." in f)):
            values = (models[file].get("accuracy") or {}).get(distortion, [])
            out.append(f"| {file} | " + " | ".join(_pct(a) for a in values) + " |")
    return out


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
        "| file | batch | ms per call | images/s |",
        "|---|---:|---:|---:|",
    ]
    for r in timings["rows"]:
        out.append(f"| {r['file']} | {r['batch']} | {r['ms']:.3f} | {r['images_per_s']:,} |")
    return out


def _count(doc: dict) -> str:
    """A report's image count, with thousands separators."""
    n = doc.get("n")
    return f"{n:,}" if isinstance(n, int) else "?"
