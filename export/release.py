"""`flaxdigits release`: the exported models, their manifests and a model card in one archive.

dist/flaxdigits-models-VERSION-DIGEST.tar.gz holds, under a folder of the same name:
models/{mlp,cnn}.onnx, .int8.onnx and .json (as `flaxdigits export --int8` wrote them), the
gate's (gate.onnx, .int8.onnx, gate.json: contract.GATE_NAME) when the folder has one, a
release.json index, MODEL_CARD.md and SHA256SUMS (every other file's sha256). DIGEST is the
start of SHA256SUMS's own sha256, so two different releases never share a name. The card's
figures are read, never re-derived: accuracies from each file's ONNX metadata and manifest,
canvas and robustness accuracies and non-digit detection from reports/*.json where they
measured these very bytes, and latency measured here on the files with the machine named. Every
model is checked against its manifest before it is packed, and the gate's drawing rule against
the mlp and cnn files packed with it: a release is never made from a modified export, nor with
a gate the page would refuse.

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
from flaxdigits.core import contract
from flaxdigits.core.atomic import write_bytes_atomic
from flaxdigits.core.files import ReadError, read_capped
from flaxdigits.export.latency import benchmark
from flaxdigits.export.model_card import LICENSE, VARIANTS, file_accuracy, model_card
from flaxdigits.release import archive
from flaxdigits.release.archive import ReleaseError
from flaxdigits.serve.runtime import session as onnxrt

MAX_FILE_BYTES = archive.MAX_MEMBER_BYTES
LATENCY_BATCHES = (1, 256)
REPORT_MAX_BYTES = 16 * 1024 * 1024


def build_release(
    models_dir="models",
    out_dir="dist",
    *,
    reports_dir="reports",
    version: str | None = None,
    latency: bool = True,
    variants: tuple[str, ...] = VARIANTS,
    log: Callable[[str], object] = print,
) -> Path:
    """Pack models_dir's float and int8 models of both architectures into a release archive.

    Args:
        models_dir: holds {mlp,cnn}.onnx, .int8.onnx and .json (`make export`), and the
            gate's files of the same variants when it has a gate.
        out_dir: where the archive is written (created if needed).
        reports_dir: canvas_accuracy.json, robustness.json and answers.json are read from here
            when present; the card quotes their figures only for the exact bytes they measured
            (by sha256).
        version: the release version (default: the flaxdigits package version).
        latency: measure onnxruntime latency on this machine for the card.
        variants: which files of each model the release holds: both (the default), or only the
            int8 ones (a small release, e.g. the one the quickstart serves).
        log: receives progress lines.

    Returns:
        The path of the archive written.

    Raises:
        ReleaseError: a model, int8 variant or manifest is missing or does not match, or the
            gate's drawing rule does not name the mlp and cnn files released.
    """
    models_dir, reports_dir = Path(models_dir), Path(reports_dir)
    version = version or flaxdigits.__version__
    archive.check_relative_path(f"v{version}")
    variants = _check_variants(variants)
    files, described, gate = _model_files(models_dir, variants)
    reports = _reports(reports_dir)
    timings = _latency(models_dir, variants, gate is not None) if latency else None
    info = _info(version, described, gate)
    files[archive.INFO] = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    card = model_card(version, described, reports, timings, gate=gate)
    files[archive.CARD] = card.encode()
    digests = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    sums = archive.format_sums(digests).encode()
    files[archive.SUMS] = sums
    name = f"flaxdigits-models-{version}-{hashlib.sha256(sums).hexdigest()[:8]}"
    packed = archive.pack(name, files)
    path = Path(out_dir) / f"{name}{archive.ARCHIVE_SUFFIX}"
    try:
        write_bytes_atomic(path, packed)
    except OSError as e:
        raise ReleaseError(f"{path}: cannot write the release ({e.strerror or e})") from None
    log(f"{path}: {len(packed):,} bytes, {len(files)} files")
    return path


# ----------------------------------------------------------------------------------- reading


def _check_variants(variants) -> tuple[str, ...]:
    """The variants in VARIANTS order; an unknown or empty choice is a ReleaseError."""
    chosen = tuple(v for v in VARIANTS if v in variants)
    if not chosen or set(variants) - set(VARIANTS):
        raise ReleaseError(f"variants {list(variants)}: choose from {', '.join(VARIANTS)}")
    return chosen


def _model_files(
    models_dir: Path, variants
) -> tuple[dict[str, bytes], dict[str, dict], dict | None]:
    """{release path: bytes} of every model file and manifest, per served model what the card
    needs (its manifest and, per variant, the file's entry and ONNX metadata), and the same of
    the gate with its drawing rule per variant (None in a folder without a gate)."""
    files: dict[str, bytes] = {}
    described = {name: _model(models_dir, name, variants, files) for name in contract.MODEL_NAMES}
    return files, described, _gate(models_dir, variants, described, files)


def _model(models_dir: Path, name: str, variants, files: dict[str, bytes]) -> dict:
    """One model's manifest and its files of `variants`, each checked against the manifest
    (size and sha256) and added to files; what the card needs of them."""
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
    shipped = {}
    for variant in variants:
        file = contract.model_file(name, variant)
        path = models_dir / file
        data = _read(path)
        entry = entries.get(file)
        if entry is None:
            raise ReleaseError(
                f"{manifest_path} does not list {file}: export with --int8 (`make export`)"
            )
        digest = hashlib.sha256(data).hexdigest()
        if entry.get("sha256") != digest or entry.get("size") != len(data):
            raise ReleaseError(
                f"{path} does not match its manifest {manifest_path.name}: the file was "
                "modified; re-export it"
            )
        shipped[variant] = {"file": file, "entry": entry, "metadata": _metadata(data, path)}
        files[f"models/{file}"] = data
    return {"manifest": manifest, "variants": shipped}


def _gate(models_dir: Path, variants, described: dict[str, dict], files) -> dict | None:
    """The gate as _model describes a model, each shipped variant with the drawing rule its
    manifest carries (as "rule"), which must name the shipped mlp and cnn files by sha256: the
    page refuses a gate whose rule was fitted with other files. None without a gate."""
    name = contract.GATE_NAME
    names = (f"{name}.json", *(contract.model_file(name, v) for v in contract.VARIANT_SUFFIXES))
    if not any((models_dir / n).exists() for n in names):
        return None
    gate = _model(models_dir, name, variants, files)
    rules = gate["manifest"].get("drawing_rule")
    for variant, shipped in gate["variants"].items():
        where = f"{models_dir / f'{name}.json'}: the {variant} drawing rule"
        try:
            rule = contract.check_drawing_rule((rules or {}).get(variant))
        except ValueError as e:
            raise ReleaseError(f"{where} is not usable ({e}): re-export the gate") from None
        members = {n: d["variants"][variant]["entry"]["sha256"] for n, d in described.items()}
        if rule["members"] != members:
            raise ReleaseError(
                f"{where} was fitted with other mlp and cnn files than these (re-exported "
                "since?): export the gate again (`make export`)"
            )
        shipped["rule"] = rule
    return gate


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


def _reports(reports_dir: Path) -> dict[str, Any]:
    """The canvas, robustness and answers reports in reports_dir, {key: (path, report)}, and why
    one that is there cannot be read ({key}_skipped); the card quotes of each only what it
    measured on these very bytes."""
    found: dict[str, Any] = {}
    for key, file in (
        ("canvas", "canvas_accuracy.json"),
        ("robustness", "robustness.json"),
        ("answers", "answers.json"),
    ):
        path = reports_dir / file
        try:
            doc = json.loads(read_capped(path, REPORT_MAX_BYTES, "report"))
        except ReadError as e:
            if path.exists():  # a missing one is said the same way wherever it was looked for
                found[f"{key}_skipped"] = f"{path}: {e}"
            continue
        except (ValueError, RecursionError):  # bad JSON or UTF-8, or nested past the parser
            found[f"{key}_skipped"] = f"{path} is not JSON"
            continue
        if not isinstance(doc, dict):
            found[f"{key}_skipped"] = f"{path} is not a report"
            continue
        found[key] = (str(path), doc)
    return found


def _latency(models_dir: Path, variants, gate: bool) -> dict[str, Any]:
    """onnxruntime ms per call of every model file (the gate's too: the page runs it on every
    drawing) on this machine, and the machine."""
    names = (*contract.MODEL_NAMES, *([contract.GATE_NAME] if gate else []))
    paths = [models_dir / contract.model_file(n, v) for n in names for v in variants]
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


def _info(version: str, described: dict[str, dict], gate: dict | None) -> dict[str, Any]:
    """release.json: what the release holds, for programs (the card is for people); the gate,
    when there is one, under "gate"."""
    info = {
        "schema": archive.SCHEMA,
        "version": version,
        "flaxdigits_version": flaxdigits.__version__,
        "preprocessing": contract.PREPROCESSING_SPEC,
        "license": LICENSE,
        "models": {name: _info_model(name, d) for name, d in described.items()},
    }
    if gate is not None:
        info["gate"] = _info_model(contract.GATE_NAME, gate)
    return info


def _info_model(name: str, d: dict) -> dict[str, Any]:
    """release.json's entry of one model: its manifest, parameters, recipe and files."""
    return {
        "manifest": f"models/{name}.json",
        "params": d["manifest"].get("params"),
        "recipe": (d["manifest"].get("recipe") or {}).get("name"),
        "files": {
            v: {"path": f"models/{var['file']}", "test_accuracy": file_accuracy(var)}
            for v, var in d["variants"].items()
        },
    }
