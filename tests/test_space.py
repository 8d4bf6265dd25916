"""The Hugging Face Space folder export/space.py assembles from a verified release."""

from __future__ import annotations

import ast

import pytest

from flaxdigits.export import space
from flaxdigits.release.reader import ReleaseError


def test_space_folder_holds_app_requirements_readme_release_and_the_jax_free_package(
    tmp_path,
):
    from flaxdigits.export.release import build_release
    from tests.support.release_models import write_models

    archive = build_release(
        write_models(tmp_path / "models"), tmp_path / "dist", latency=False, log=print
    )
    out = space.build_space(archive, tmp_path / "space")
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"app.py", "requirements.txt", "README.md", "release/SHA256SUMS"} <= names
    assert {
        "release/models/cnn.onnx",
        "flaxdigits/cli/main.py",
        "flaxdigits/serve/page/app.py",
        "flaxdigits/serve/page/allocator.py",
    } <= names
    # The Space's machine installs jemalloc, which serve runs the page on.
    assert (out / "packages.txt").read_text().split() == ["libjemalloc2"]
    assert not any(n.startswith("flaxdigits/export") for n in names)
    for name in names:  # the vendored package is the serve side: no training module
        if name.endswith(".py"):
            tree = ast.parse((out / name).read_text())
            imported = {
                (node.module or "") if isinstance(node, ast.ImportFrom) else a.name
                for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom)
                for a in node.names
            }
            assert not {m.split(".")[0] for m in imported} & {"jax", "flax", "optax"}, name
            # ... and whole: every flaxdigits module a vendored file imports when it is itself
            # imported (its top-level imports; cli's handlers import training code lazily).
            top = {
                (node.module or "") if isinstance(node, ast.ImportFrom) else a.name
                for node in tree.body
                if isinstance(node, ast.Import | ast.ImportFrom)
                for a in node.names
            }
            for module in (m for m in top if m.split(".")[0] == "flaxdigits"):
                stem = module.replace(".", "/")
                assert {f"{stem}.py", f"{stem}/__init__.py"} & names, (name, module)
    requirements = (out / "requirements.txt").read_text().split()
    assert any(r.startswith("gradio") for r in requirements)
    assert any(r.startswith("onnxruntime") for r in requirements)
    assert not any(r.startswith(("jax", "flax", "pytest")) for r in requirements)
    readme = (out / "README.md").read_text()
    assert "sdk: gradio" in readme and "app_file: app.py" in readme
    # A tampered release is not assembled.
    (tmp_path / "bad").mkdir()
    bad = tmp_path / "bad" / archive.name
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(ReleaseError):
        space.build_space(bad, tmp_path / "space2")
    assert not (tmp_path / "space2").exists()


def test_the_front_matter_pins_the_python_the_package_needs():
    import importlib.metadata

    import yaml

    floor = importlib.metadata.metadata("flaxdigits")["Requires-Python"]  # ">=3.11"
    assert floor.startswith(">=")
    readme = space.SPACE_README.format(gradio="6.31.0", release="flaxdigits-models-0.1.0-00000000")
    _, front, _ = readme.split("---\n", 2)
    config = yaml.safe_load(front)
    # A string: unquoted, YAML reads 3.10 as the number 3.1.
    assert config["python_version"] == floor.removeprefix(">=")
    assert config["sdk"] == "gradio" and config["app_file"] == "app.py"
