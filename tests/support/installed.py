"""flaxdigits laid out as a wheel installs it: export/ and serve/ under flaxdigits/ (a copy).

In the checkout export/ and serve/ sit beside flaxdigits/ and install as flaxdigits.export and
flaxdigits.serve. Tools that find a package by walking its folder (import-linter's grimp, mutmut)
would see flaxdigits/ alone; they read this tree instead. `make lint` runs:

    python -m tests.support.installed build/installed
    cd build/installed && lint-imports ../../pyproject.toml
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def package_dirs(root: Path = ROOT) -> dict[str, str]:
    """{import name: folder in the checkout} of the top-level mappings in pyproject.toml."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    return dict(pyproject["tool"]["setuptools"]["package-dir"])


def installed_tree(dest: Path, root: Path = ROOT) -> Path:
    """Copy the package into dest as installed (dest/flaxdigits/serve/..., and so on), replacing
    what dest held; returns dest."""
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    for name, folder in sorted(package_dirs(root).items()):  # the parent package first
        shutil.copytree(root / folder, dest.joinpath(*name.split(".")), ignore=IGNORE)
    return dest


def lint_imports(tree: Path, *contracts: str, root: Path = ROOT) -> subprocess.CompletedProcess:
    """import-linter over tree with the contracts of root's pyproject.toml (all, or those ids)."""
    lint = Path(sys.executable).with_name("lint-imports")
    argv = [str(lint), "--no-cache", "--no-logo"]
    argv += [arg for contract in contracts for arg in ("--contract", contract)]
    argv.append(str(root / "pyproject.toml"))
    # import-linter finds the root package from its working directory, which it puts on sys.path
    return subprocess.run(argv, cwd=tree, capture_output=True, text=True, timeout=300)


if __name__ == "__main__":
    print(installed_tree(Path(sys.argv[1])))
