"""Model releases: what `flaxdigits release` packs and the card says, and how serve/predict
verify a release before reading any model (a flipped byte anywhere, hostile archives)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import pytest

from flaxdigits.cli.main import main
from flaxdigits.core import contract
from flaxdigits.export.release import ReleaseError as BuildError
from flaxdigits.export.release import build_release
from flaxdigits.release import archive as release_archive
from flaxdigits.release import reader as release
from flaxdigits.release.reader import ReleaseError, read_release
from flaxdigits.serve.page.handlers import load_predictors
from tests.support.toy_onnx import no_parsers, toy_model_bytes

ACCURACY = {"mlp": (0.9123, 0.9101), "cnn": (0.9876, 0.9880)}  # (float32, int8)
DIGIT = {"mlp": 3, "cnn": 8}
ANSWER_RULE = {  # what `export` fits on the validation split (export/confidence.py)
    "mlp": {
        "temperature": 1.4321,
        "not_a_digit_below": 0.4567,
        "not_sure_below": 0.8,
        "validation_rejected": 0.005,
    },
    "cnn": {
        "temperature": 1.1234,
        "not_a_digit_below": 0.6123,
        "not_sure_below": 0.8,
        "validation_rejected": 0.0048,
    },
}
EXPECTED = {
    f"models/{n}{s}" for n in contract.MODEL_NAMES for s in (".onnx", ".int8.onnx", ".json")
} | {"release.json", "MODEL_CARD.md", "SHA256SUMS"}


def _write_models(
    directory: Path, digits: dict[str, int] = DIGIT, answers: dict[str, dict] | None = None
) -> Path:
    """Toy mlp/cnn float + int8 files with metadata and manifests, as `export --int8` lays out;
    each model reads any ink as its digit in `digits`. With `answers` ({file: the manifest
    entry's "answers"}), each model carries ANSWER_RULE in its files and manifest; without, it
    is a model exported before answer rules."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in contract.MODEL_NAMES:
        entries = []
        for variant, file, acc in zip(
            ("float32", "int8"), (f"{name}.onnx", f"{name}.int8.onnx"), ACCURACY[name], strict=True
        ):
            meta = {
                contract.META_PARAMS: "7850",
                contract.META_TEST_ACCURACY: f"{acc:.4f}",
                contract.META_VARIANT: variant,
                contract.META_RECIPE: "robust",
            }
            if answers is not None:
                meta[contract.META_ANSWER_RULE] = json.dumps(ANSWER_RULE[name])
            data = toy_model_bytes(name=name, ink_digit=digits[name], metadata=meta)
            (directory / file).write_bytes(data)
            entries.append(
                {
                    "file": file,
                    "variant": variant,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "test_accuracy": acc,
                    "parity": {"max_abs_diff": 2.5e-6, "argmax_mismatches": 0},
                }
                | ({"answers": answers[file]} if answers is not None else {})
            )
        manifest = {
            "schema": contract.MANIFEST_SCHEMA,
            "model": name,
            "params": 7850,
            "train_config": {"epochs": 40, "batch_size": 128, "learning_rate": 0.003, "seed": 0},
            "recipe": {
                "name": "robust",
                "schedule": "warmup_cosine",
                "augment": {"share": 0.7},
                "dropout": 0.5 if name == "cnn" else 0.0,
            },
            "files": entries,
        }
        if answers is not None:
            manifest["answer_rule"] = ANSWER_RULE[name]
        if name == "cnn":  # the mlp's manifest is one from before precisions were recorded
            manifest["training_precision"] = "bfloat16"
        (directory / f"{name}.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return _write_models(tmp_path_factory.mktemp("release_models") / "models")


@pytest.fixture(scope="module")
def archive(models, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    return build_release(models, out, reports_dir=out / "none", latency=False, log=lambda _: None)


@pytest.fixture
def folder(archive, tmp_path) -> Path:
    """The archive unpacked by the system's tar (an independent reader)."""
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(tmp_path)], check=True)
    (root,) = tmp_path.iterdir()
    return root


def _gz(raw: bytes) -> bytes:
    """A tar's bytes gzipped with the exact header, digest and trailer release archives use."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return _framed(deflate.compress(raw) + deflate.flush(), raw)


def _framed(body: bytes, raw: bytes) -> bytes:
    trailer = struct.pack("<II", zlib.crc32(raw), len(raw) & 0xFFFFFFFF)
    return release_archive.GZIP_HEADER + hashlib.sha256(body).digest() + body + trailer


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
    broken = _write_models(tmp_path / "models")
    data = bytearray((broken / "cnn.int8.onnx").read_bytes())
    data[-1] ^= 1
    (broken / "cnn.int8.onnx").write_bytes(bytes(data))
    with pytest.raises(BuildError, match="cnn.int8.onnx does not match its manifest"):
        build_release(broken, tmp_path / "dist", latency=False, log=print)
    (broken / "mlp.int8.onnx").unlink()
    with pytest.raises(BuildError, match="mlp.int8.onnx.*make export"):
        build_release(broken, tmp_path / "dist", latency=False, log=print)
    assert not (tmp_path / "dist").exists()


# ---------------------------------------------------------------------------- verification


def test_serve_loads_both_models_from_a_release_and_removes_its_private_copy(archive, folder):
    for source in (archive, folder):
        with release.models_dir(source) as models:
            predictors = load_predictors(models)
            assert oct(models.parent.stat().st_mode & 0o777) == "0o700"
        assert not models.exists()
        assert {n: p.metadata[contract.META_TEST_ACCURACY] for n, p in predictors.items()} == {
            "mlp": "0.9123",
            "cnn": "0.9876",
        }


def test_predict_reads_any_model_of_a_release(archive, folder, tmp_path, capsys):
    from PIL import Image

    from tests.support.drawings import draw_digit

    image = tmp_path / "seven.png"
    Image.fromarray(draw_digit()).save(image)
    for source, file, digit in ((archive, "mlp.int8.onnx", 3), (folder, "cnn.onnx", 8)):
        args = ["predict", "--model", str(source), "--release-file", file, "--json", str(image)]
        assert main(args) == 0
        assert json.loads(capsys.readouterr().out)["digit"] == digit
    assert main(["predict", "--model", str(archive), "--release-file", "x.onnx", str(image)]) == 2
    assert "no model file 'x.onnx'" in capsys.readouterr().err


def test_verify_prints_one_line_with_the_sha256_to_compare_with_a_published_one(archive, capsys):
    assert main(["verify", str(archive)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "9 files" in out and "every sha256 matches" in out
    assert out.rstrip().endswith(hashlib.sha256(archive.read_bytes()).hexdigest())


def test_a_release_whose_name_does_not_match_its_checksums_is_refused(folder, tmp_path):
    other = tmp_path / "flaxdigits-models-0.1.0-00000000"
    folder.rename(other)
    with pytest.raises(ReleaseError, match="name's digest 00000000 is not that of its"):
        read_release(other)
    renamed = tmp_path / "my-models"  # a name without a digest is not checked
    other.rename(renamed)
    assert read_release(renamed).name == "my-models"


def test_a_flipped_byte_anywhere_in_the_archive_refuses_it_and_loads_nothing(archive, tmp_path):
    data = archive.read_bytes()
    bad = tmp_path / archive.name
    with no_parsers():
        for i in range(len(data)):
            bad.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :])
            with pytest.raises(ReleaseError) as caught:
                read_release(bad)
            assert "\n" not in str(caught.value) and "nothing loaded" in str(caught.value), i


def test_a_flipped_byte_in_any_unpacked_file_refuses_the_release(folder, capsys, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"never read")
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        original = path.read_bytes()
        for i in sorted({0, len(original) // 2, len(original) - 1}):
            path.write_bytes(original[:i] + bytes([original[i] ^ 0x80]) + original[i + 1 :])
            with no_parsers():
                status = main(["predict", "--model", str(folder), "--json", str(image)])
                out, err = capsys.readouterr()
                assert status == 2 and out == "" and err.count("\n") == 1, (path, i, err)
                assert "release refused, nothing loaded" in err
                with pytest.raises(ReleaseError):
                    release.models_dir(folder).__enter__()
        path.write_bytes(original)
    assert main(["verify", str(folder)]) == 0


def test_a_missing_or_extra_file_refuses_the_release(folder):
    (folder / "models" / "notes.txt").write_text("hi")
    with pytest.raises(ReleaseError, match="models/notes.txt is not listed"):
        read_release(folder)
    (folder / "models" / "notes.txt").unlink()
    (folder / "MODEL_CARD.md").unlink()
    with pytest.raises(ReleaseError, match="MODEL_CARD.md is listed .* but missing"):
        read_release(folder)


def test_a_link_in_an_unpacked_release_is_refused(folder, tmp_path):
    target = tmp_path / "elsewhere.onnx"
    target.write_bytes((folder / "models" / "cnn.onnx").read_bytes())
    (folder / "models" / "cnn.onnx").unlink()
    (folder / "models" / "cnn.onnx").symlink_to(target)
    with pytest.raises(ReleaseError, match="link or special file"):
        read_release(folder)


# ------------------------------------------------------------------------- hostile archives


def _tar(members) -> bytes:
    """A tar of (TarInfo, bytes | None) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name, kind=tarfile.REGTYPE, data=b"x", **fields):
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data if kind == tarfile.REGTYPE else None


HOSTILE = {
    "parent": ([_member("top/../evil")], "unsafe or unexpected path"),
    "absolute": ([_member("/etc/evil")], "unsafe or unexpected path"),
    "outside-top": ([_member("top/a"), _member("other/b")], "outside top/"),
    "symlink": ([_member("top/a", tarfile.SYMTYPE, linkname="/etc/passwd")], "link or special"),
    "hardlink": ([_member("top/a"), _member("top/b", tarfile.LNKTYPE, linkname="top/a")], "link"),
    "device": ([_member("top/dev", tarfile.CHRTYPE)], "link or special file"),
    "fifo": ([_member("top/fifo", tarfile.FIFOTYPE)], "link or special file"),
    "duplicate": ([_member("top/a"), _member("top/a", data=b"y")], "appears twice"),
    "backslash": ([_member("top/..\\evil")], "unsafe or unexpected path"),
    "hidden": ([_member("top/.bashrc")], "unsafe or unexpected path"),
    "too-deep": ([_member("top/a/b/c/d/e")], "unsafe or unexpected path"),
    "too-many": ([_member(f"top/f{i}") for i in range(release_archive.MAX_MEMBERS + 1)], "over 64"),
    "file-and-folder": ([_member("top/a"), _member("top/a/b")], "both a file and a folder"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_before_anything_is_written(case, tmp_path, monkeypatch):
    members, message = HOSTILE[case]
    path = tmp_path / "evil.tar.gz"
    path.write_bytes(_gz(_tar(members)))
    monkeypatch.setattr(release.tempfile, "mkdtemp", pytest.fail)  # nothing reaches the disk
    with pytest.raises(ReleaseError, match=message):
        with release.models_dir(path):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]


def test_a_member_claiming_a_huge_size_is_refused_before_it_is_read(tmp_path):
    raw = bytearray(_tar([_member("top/a", data=b"x" * 10)]))
    info = tarfile.TarInfo("top/a")
    info.size = release_archive.MAX_MEMBER_BYTES + 1
    header = info.tobuf(tarfile.GNU_FORMAT)
    raw[: len(header)] = header  # a header claiming 64 MiB + 1 over 10 bytes of data
    path = tmp_path / "huge.tar.gz"
    path.write_bytes(_gz(bytes(raw) + bytes(release_archive.MAX_MEMBER_BYTES + 1024)))
    with pytest.raises(ReleaseError, match="over the 67,108,864-byte limit"):
        read_release(path)


def test_a_decompression_bomb_is_stopped_at_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(release_archive, "MAX_UNPACKED_BYTES", 4 * 1024 * 1024)  # 256 MiB: slow
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(bytes(64 * 1024 * 1024)) + deflate.flush()  # 64 MiB of zeros
    path = tmp_path / "bomb.tar.gz"
    path.write_bytes(_framed(body, b""))
    assert path.stat().st_size < 128 * 1024
    with pytest.raises(ReleaseError, match="unpacks to over 4,194,304 bytes"):
        read_release(path)
    data = path.read_bytes()
    tracemalloc.start()  # (read_capped's buffer is its cap, allocated and never touched: not here)
    try:
        with pytest.raises(release_archive.ReleaseError):
            release_archive.unpack(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024  # inflated up to the cap, never the whole 64 MiB


def test_trailing_bytes_and_an_oversized_archive_are_refused(archive, tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(archive.read_bytes() + b"\0")
    with pytest.raises(ReleaseError, match="does not match its sha256"):
        read_release(path)
    with open(path, "wb") as f:
        f.truncate(release_archive.MAX_ARCHIVE_BYTES + 1)
    with pytest.raises(ReleaseError, match="over the 67,108,864-byte limit"):
        read_release(path)


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"%s  b\n%s  a\n" % (b"0" * 64, b"0" * 64),  # unsorted
        b"%s  a\n%s  a\n" % (b"0" * 64, b"0" * 64),  # duplicate
        b"%s  a\r\n" % (b"0" * 64),  # CRLF
        b"%s  a" % (b"0" * 64),  # no final newline
        b"%s *a\n" % (b"0" * 64),  # binary-mode marker
        b"%s  ../a\n" % (b"0" * 64),
        b"%s  a\n" % (b"A" * 64),  # upper-case hex
    ],
)
def test_only_the_exact_checksum_format_is_read(text):
    with pytest.raises(release_archive.ReleaseError):
        release_archive.parse_sums(text)


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
