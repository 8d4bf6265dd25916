"""What a wheel of flaxdigits holds: every package folder of the repository, as pyproject lists."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_folders() -> dict[str, Path]:
    """{import name: folder} of every folder with an __init__.py under the mapped top folders."""
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = {}
    for top, folder in mapping.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder).parts
            found[".".join([top, *rel])] = init.parent
    return found


def test_every_package_folder_is_listed_and_every_listed_package_exists():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    on_disk = set(package_folders())
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == set(), "pyproject.toml lists packages that have no folder"


def test_no_python_file_sits_in_a_folder_that_is_not_a_package():
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    stray = [
        str(path.relative_to(ROOT))
        for folder in set(mapping.values())
        for path in (ROOT / folder).rglob("*.py")
        if not (path.parent / "__init__.py").is_file()
    ]
    assert stray == [], "these modules would be left out of the wheel"


def test_one_license_everywhere():
    import json

    from flaxdigits.export import model_card, space

    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "CC BY-SA 3.0" in (ROOT / "LICENSE").read_text()  # MNIST's, stated
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert json.loads((ROOT / "web" / "package.json").read_text())["license"] == "Apache-2.0"
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())
    assert lock["packages"][""]["license"] == "Apache-2.0"
    assert model_card.LICENSE == "Apache-2.0"
    assert "license: apache-2.0" in space.SPACE_README
