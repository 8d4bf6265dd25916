"""Model releases: what `flaxdigits release` packs and the card says, the small int8-only
release, and what it refuses to build. How serve/predict verify a release before reading any
model (a flipped byte anywhere, hostile archives): tests/test_release_reader.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from flaxdigits.cli.main import main
from flaxdigits.core import contract
from flaxdigits.export.release import ReleaseError as BuildError
from flaxdigits.export.release import build_release
from flaxdigits.release import archive as release_archive
from flaxdigits.release import reader as release
from flaxdigits.release.reader import ReleaseError, read_release
from flaxdigits.serve.page.handlers import load_predictors
from tests.support.release_models import write_models

EXPECTED = {
    f"models/{n}{s}" for n in contract.MODEL_NAMES for s in (".onnx", ".int8.onnx", ".json")
} | {"release.json", "MODEL_CARD.md", "SHA256SUMS"}


# ------------------------------------------------------------------------------- building


def test_release_holds_both_models_float_and_int8_manifests_card_and_checksums(archive, folder):
    assert archive.name.startswith("flaxdigits-models-0.1.0-")
    assert archive.name.endswith(".tar.gz") and folder.name == archive.name[: -len(".tar.gz")]
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert found == EXPECTED
    # sha256sum, not our reader, checks the list: the format is the standard one.
    check = subprocess.run(
        ["sha256sum", "--strict", "-c", "SHA256SUMS"], cwd=folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == len(EXPECTED) - 1
    # The name's digest is the checksum list's own.
    digest = hashlib.sha256((folder / "SHA256SUMS").read_bytes()).hexdigest()
    assert folder.name.endswith(digest[:8])
    info = json.loads((folder / "release.json").read_text())
    assert info["schema"] == release_archive.SCHEMA
    assert info["models"]["cnn"]["files"]["int8"] == {
        "path": "models/cnn.int8.onnx",
        "test_accuracy": 0.988,
    }


def test_the_same_models_give_a_byte_identical_release(models, archive, tmp_path):
    again = build_release(models, tmp_path, reports_dir=tmp_path, latency=False, log=print)
    assert again.name == archive.name and again.read_bytes() == archive.read_bytes()


def test_the_card_states_data_recipe_params_accuracies_int8_deltas_latency_use_limits_license(
    models, tmp_path, monkeypatch
):
    import flaxdigits.export.release as writer

    quick = writer.benchmark  # one short timed block per file: the card's table, not its figures
    monkeypatch.setattr(
        writer, "benchmark", lambda paths, b, t, **_: quick(paths, b, t, blocks=1, block_seconds=0)
    )
    reports = tmp_path / "reports"
    reports.mkdir()
    stems = ("mlp", "mlp.int8", "cnn", "cnn.int8")
    digest = {s: hashlib.sha256((models / f"{s}.onnx").read_bytes()).hexdigest() for s in stems}
    canvas = {
        "n": 100,
        "models": {s: str(models / f"{s}.onnx") for s in stems},
        "sha256": digest,
        "accuracy": {
            s: {"mnist": 0.9511, "box": 0.9022} for s in ("mlp", "mlp.int8", "cnn", "cnn.int8")
        },
    }
    (reports / "canvas_accuracy.json").write_text(json.dumps(canvas))
    robust = {
        "n": 100,
        "grid": {"rotate": {"levels": [-30.0, 30.0], "unit": "degrees"}},
        "models": {
            "cnn/robust/float32": {
                "file": str(models / "cnn.onnx"),
                "sha256": digest["cnn"],
                "recipe": "robust",
                "accuracy": {"rotate": [0.9731, 0.9712]},
            },
            "cnn/original/float32": {  # another folder's cnn.onnx: not these bytes
                "file": str(tmp_path / "original" / "cnn.onnx"),
                "sha256": hashlib.sha256(b"other bytes").hexdigest(),
                "recipe": "original",
                "accuracy": {"rotate": [0.1111, 0.1111]},
            },
        },
    }
    (reports / "robustness.json").write_text(json.dumps(robust))
    path = build_release(models, tmp_path / "dist", reports_dir=reports, log=lambda _: None)
    card = read_release(path).files["MODEL_CARD.md"].decode()
    for text in (
        "## Data",
        "MNIST",
        "6,000 images",
        "| mlp | Flatten(784)",
        "| 7,850 | robust | 40 | 128 | 0.003 | warmup_cosine |",
        "augmentation",
        "| mlp | 91.23% | 91.01% | -0.22 | 2.5e-06 | 0 |",
        "| cnn | 98.76% | 98.80% | +0.04 |",
        "| cnn.int8.onnx | 95.11% | 90.22% |",
        "| cnn.onnx | 97.31% | 97.12% |",
        "## Latency",
        "cores available",
        "| mlp.int8.onnx | 256 |",
        "## Intended use",
        "## Limits",
        "## License",
        "Apache-2.0",
        "CC BY-SA 3.0",
    ):
        assert text in card, text
    assert "cnn dropout (training only, on the hidden Dense layer's inputs): 0.5" in card
    assert "mlp dropout" not in card  # a rate of 0 is not a dropout
    rows = {line.split(" | ")[0]: line for line in card.splitlines() if "warmup_cosine" in line}
    assert rows["| cnn"].endswith("| warmup_cosine | bfloat16 |")  # its training's precision
    assert rows["| mlp"].endswith("| warmup_cosine | float32 |")  # none recorded: float32
    assert "every file holds float32 (or int8) weights" in card
    assert "11.11%" not in card  # the seed folder's figures are not these files'
    # Figures are bound to bytes, not times: a report older than the models it measured is
    # still theirs (tests/test_model_card.py: other bytes are not quoted, whatever the times).
    old = os.stat(models / "cnn.onnx").st_mtime - 100
    os.utime(reports / "canvas_accuracy.json", (old, old))
    path = build_release(
        models, tmp_path / "dist2", reports_dir=reports, latency=False, log=lambda _: None
    )
    card = read_release(path).files["MODEL_CARD.md"].decode()
    assert "| cnn.int8.onnx | 95.11% | 90.22% |" in card
    # The robustness report measured only cnn.onnx of these files: the others are named.
    assert "Robustness of mlp.onnx, mlp.int8.onnx, cnn.int8.onnx: not measured for these" in card


def test_a_release_is_not_made_from_a_modified_or_incomplete_export(models, tmp_path):
    broken = write_models(tmp_path / "models")
    data = bytearray((broken / "cnn.int8.onnx").read_bytes())
    data[-1] ^= 1
    (broken / "cnn.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(BuildError, match="cnn.int8.onnx does not match its manifest"):
        build_release(broken, tmp_path / "dist", latency=False, log=print)
    (broken / "mlp.int8.onnx").unlink()
    with pytest.raises(BuildError, match="mlp.int8.onnx.*make export"):
        build_release(broken, tmp_path / "dist", latency=False, log=print)
    assert not (tmp_path / "dist").exists()


# ------------------------------------------------------------------- the small, int8-only release


def test_an_int8_only_release_holds_the_int8_files_and_serves_them(models, tmp_path):
    small = build_release(
        models, tmp_path, reports_dir=tmp_path / "none", latency=False, variants=("int8",),
        log=lambda _: None,
    )  # fmt: skip
    verified = read_release(small)
    assert set(verified.files) == {
        f"models/{n}{s}" for n in contract.MODEL_NAMES for s in (".int8.onnx", ".json")
    } | {"release.json", "MODEL_CARD.md", "SHA256SUMS"}
    info = verified.info["models"]
    assert {n: list(m["files"]) for n, m in info.items()} == {"mlp": ["int8"], "cnn": ["int8"]}
    card = verified.files["MODEL_CARD.md"].decode()
    assert "each as a statically quantized int8 file (the float32 files are left out)" in card
    assert "float32.onnx" not in card and "| models/cnn.onnx |" not in card
    with release.models_dir(small) as folder:
        predictors = load_predictors(folder)  # the int8 files, as the float ones are not there
        assert {n: p.metadata[contract.META_VARIANT] for n, p in predictors.items()} == {
            "mlp": "int8",
            "cnn": "int8",
        }
    assert small.stat().st_size < archive_size_of_both(models, tmp_path)


def test_predict_on_an_int8_only_release_reads_its_cnn_without_being_told(models, tmp_path, capsys):
    from PIL import Image

    from tests.support.drawings import draw_digit

    small = build_release(
        models, tmp_path, reports_dir=tmp_path / "none", latency=False, variants=("int8",),
        log=lambda _: None,
    )  # fmt: skip
    image = tmp_path / "seven.png"
    Image.fromarray(draw_digit()).save(image)
    assert main(["predict", "--model", str(small), "--json", str(image)]) == 0
    assert json.loads(capsys.readouterr().out)["digit"] in range(10)
    # Named explicitly, the missing float file is still an error, not silently the int8 one.
    assert main(["predict", "--model", str(small), "--release-file", "cnn.onnx", str(image)]) == 2
    assert "no model file 'cnn.onnx'" in capsys.readouterr().err


def archive_size_of_both(models, tmp_path) -> int:
    both = build_release(models, tmp_path / "both", reports_dir=tmp_path / "none", latency=False)
    return both.stat().st_size


def test_a_release_json_that_names_files_the_release_lacks_or_none_is_refused(models, tmp_path):
    small = build_release(
        models, tmp_path, reports_dir=tmp_path / "none", latency=False, variants=("int8",),
        log=lambda _: None,
    )  # fmt: skip
    files = dict(read_release(small).files)
    for claim, message in (
        ({"float32": {}, "int8": {}}, "release has no models/mlp.onnx"),
        ({}, "does not say which files of mlp it holds"),
        ({"fp16": {}}, "does not say which files of mlp it holds"),
    ):
        info = json.loads(files["release.json"])
        info["models"]["mlp"]["files"] = claim
        changed = files | {"release.json": json.dumps(info).encode()}
        sums = release_archive.format_sums(
            {p: hashlib.sha256(d).hexdigest() for p, d in changed.items() if p != "SHA256SUMS"}
        )
        folder = tmp_path / f"claim{len(claim)}{'fp16' in claim}"
        for rel, data in (changed | {"SHA256SUMS": sums.encode()}).items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_bytes(data)
        with pytest.raises(ReleaseError, match=message):
            read_release(folder)


def test_an_unknown_variant_is_refused_before_anything_is_written(models, tmp_path):
    with pytest.raises(ReleaseError, match="choose from float32, int8"):
        build_release(models, tmp_path / "out", latency=False, variants=("fp16",))
    assert not (tmp_path / "out").exists()
