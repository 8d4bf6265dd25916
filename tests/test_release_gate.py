"""A release of a models folder with the gate (issue 33): the gate's files of the shipped
variants and gate.json are packed, each checked against its manifest and its drawing rule
against the mlp and cnn files packed with it; the reader hands them back, and serving the
release loads the gate with its rule. A folder without a gate still releases
(tests/test_release.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from flaxdigits.core import contract
from flaxdigits.export.release import ReleaseError as BuildError
from flaxdigits.export.release import build_release
from flaxdigits.release import archive as release_archive
from flaxdigits.release import reader as release
from flaxdigits.release.reader import ReleaseError, read_release
from flaxdigits.serve.runtime.model_set import load_models
from tests.support.release_models import write_models
from tests.support.toy_onnx import toy_model_bytes, upright_stroke_weights

BELOW = {"float32": 0.4282, "int8": 0.4278}  # each variant's threshold
GATE_FILES = {"float32": "gate.onnx", "int8": "gate.int8.onnx"}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_gate(models: Path) -> Path:
    """gate.onnx, gate.int8.onnx and gate.json beside write_models' files, as `make export`
    writes them: the manifest lists both files and carries a drawing rule per variant naming
    that variant's mlp and cnn files by sha256."""
    entries, rules = [], {}
    for variant, file in GATE_FILES.items():
        meta = {contract.META_VARIANT: variant, contract.META_RECIPE: "gate"}
        meta[contract.META_TEST_ACCURACY] = "0.9864"
        data = toy_model_bytes(name="cnn", weights=upright_stroke_weights(1), metadata=meta)
        (models / file).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        entries.append({"file": file, "variant": variant, "size": len(data), "sha256": digest})
        suffix = file[len("gate") :]
        members = {n: _sha(models / f"{n}{suffix}") for n in contract.MODEL_NAMES}
        rules[variant] = {
            "members": members,
            "not_a_digit_below": BELOW[variant],
            "validation_rejected": 0.005,
        }
    manifest = {
        "schema": contract.MANIFEST_SCHEMA,
        "model": "cnn",
        "params": 542230,
        "train_config": {"epochs": 10, "batch_size": 128},
        "recipe": {"name": "gate"},
        "files": entries,
        "drawing_rule": rules,
    }
    (models / "gate.json").write_text(json.dumps(manifest))
    return models


@pytest.fixture(scope="module")
def gated(tmp_path_factory) -> Path:
    return write_gate(write_models(tmp_path_factory.mktemp("gated_release") / "models"))


def _release(models: Path, out: Path, **kwargs) -> Path:
    return build_release(models, out, reports_dir=out / "none", latency=False, log=print, **kwargs)


def test_a_release_holds_the_gate_and_serving_it_loads_the_gate_with_its_rule(gated, tmp_path):
    archive = _release(gated, tmp_path / "dist")
    verified = read_release(archive)
    models = {p for p in verified.files if p.startswith("models/")}
    assert models == {
        f"models/{n}{s}" for n in ("mlp", "cnn", "gate") for s in (".onnx", ".int8.onnx", ".json")
    }
    for variant, file in GATE_FILES.items():
        assert verified.files[f"models/{file}"] == (gated / file).read_bytes()
        assert verified.info["gate"]["files"][variant]["path"] == f"models/{file}"
    assert verified.info["gate"]["manifest"] == "models/gate.json"
    rules = json.loads((gated / "gate.json").read_text())["drawing_rule"]
    with release.models_dir(archive) as folder:
        served = load_models(folder)
        assert served.gate is not None and served.gate.path.name == "gate.onnx"
        assert served.rule == rules["float32"]


def test_the_small_int8_release_holds_the_gates_int8_file_and_serves_it(gated, tmp_path):
    small = _release(gated, tmp_path, variants=("int8",))
    verified = read_release(small)
    assert "models/gate.int8.onnx" in verified.files and "models/gate.json" in verified.files
    assert "models/gate.onnx" not in verified.files
    assert list(verified.info["gate"]["files"]) == ["int8"]
    with release.models_dir(small) as folder:
        served = load_models(folder)  # the int8 files, as the float ones are not there
        assert served.gate.path.name == "gate.int8.onnx"
        assert served.rule["not_a_digit_below"] == BELOW["int8"]


def test_a_gate_that_does_not_match_its_manifest_or_the_models_is_not_released(gated, tmp_path):
    def broken(name: str) -> Path:
        folder = tmp_path / name / "models"
        shutil.copytree(gated, folder)
        return folder

    modified = broken("modified")
    data = bytearray((modified / "gate.int8.onnx").read_bytes())
    data[-1] ^= 1
    (modified / "gate.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(BuildError, match="gate.int8.onnx does not match its manifest gate.json"):
        _release(modified, tmp_path / "dist")
    # The cnn exported again after the gate: the gate's rule names the old cnn files.
    stale = broken("stale")
    fresh = write_models(tmp_path / "fresh", {"mlp": 3, "cnn": 7})
    for file in ("cnn.onnx", "cnn.int8.onnx", "cnn.json"):
        shutil.copy(fresh / file, stale / file)
    with pytest.raises(BuildError, match="float32 drawing rule was fitted with other mlp and cnn"):
        _release(stale, tmp_path / "dist")
    without = broken("without")
    manifest = json.loads((without / "gate.json").read_text())
    del manifest["drawing_rule"]["int8"]
    (without / "gate.json").write_text(json.dumps(manifest))
    with pytest.raises(BuildError, match="int8 drawing rule is not usable"):
        _release(without, tmp_path / "dist")
    _release(without, tmp_path / "dist", variants=("float32",))  # its float32 rule is whole
    lone = broken("lone")
    (lone / "gate.json").unlink()
    with pytest.raises(BuildError, match="gate.json"):
        _release(lone, tmp_path / "dist")
    assert len(list((tmp_path / "dist").iterdir())) == 1  # the float32 release of `without`


def test_a_release_json_naming_gate_files_the_release_lacks_is_refused(gated, tmp_path):
    files = dict(read_release(_release(gated, tmp_path / "dist")).files)
    del files["models/gate.int8.onnx"]
    folder = tmp_path / "flaxdigits-models-x"
    sums = release_archive.format_sums(
        {p: hashlib.sha256(d).hexdigest() for p, d in files.items() if p != "SHA256SUMS"}
    )
    for rel, data in (files | {"SHA256SUMS": sums.encode()}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    with pytest.raises(ReleaseError, match="release has no models/gate.int8.onnx"):
        read_release(folder)
