"""A module's staging tree: the package laid out as installed, the tests, a pyproject for mutmut.

mutmut names each mutant after its file's path and puts its copy of the tree first on sys.path,
so the tree must hold the package as installed (serve/ as flaxdigits/serve/, ...): then the
mutant names equal the import names the tests use. tests.support.installed lays it out, from the
working tree or from a commit (`--rev`); the tests come whole (support/, programs/, corpus/),
from the working tree or a commit (`--tests-rev`).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

from benchmarks.mutation.modules import Module
from tests.support.installed import IGNORE, installed_tree

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "build" / "mutation"
FAST = ["-m", "not slow"]
# What installed_tree reads: the package folders and the pyproject that maps them.
PACKAGE_PATHS = ["pyproject.toml", "flaxdigits", "serve", "export"]


def _checkout(rev: str | None, into: Path, paths: list[str]) -> Path:
    """The repo itself (rev None), or paths as in commit rev extracted under into."""
    if rev is None:
        return ROOT
    into.mkdir(parents=True)
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", rev, *paths],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def stage(name: str, module: Module, rev: str | None = None, tests_rev: str | None = None) -> Path:
    """A fresh staging tree build/mutation/NAME for one module; returns its path.

    The package comes from the working tree, or from commit `rev` when given; the tests likewise
    from the working tree or commit `tests_rev` (the "before" score of a module).
    """
    root = STAGE / name
    scratch = STAGE / f"{name}.checkouts"  # outside root: installed_tree replaces root whole
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        installed_tree(root, root=_checkout(rev, scratch / "package", PACKAGE_PATHS))
        tests = _checkout(tests_rev, scratch / "tests", ["tests"])
        shutil.copytree(tests / "tests", root / "tests", ignore=IGNORE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not (root / module.target).is_file():
        raise SystemExit(
            f"{name}: {module.source} is not in {rev or 'the working tree'} (a commit before the "
            "layout of 3785089..e1427d3 has it elsewhere: run the driver of that commit)"
        )
    (root / "pyproject.toml").write_text(_toml(_config(module, root)))
    return root


def _config(module: Module, root: Path) -> dict[str, dict]:
    """mutmut's settings for the module and the repo's pytest settings, as TOML tables."""
    pytest_ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    ini = dict(pytest_ini["ini_options"])
    ini.pop("addopts", None)  # -ra: noise in every mutant's run
    return {
        "tool.mutmut": {
            "source_paths": ["flaxdigits"],
            "only_mutate": [module.target],
            # Test files not written yet are left out (the "before" run of a new module).
            "pytest_add_cli_args_test_selection": [
                *(t for t in module.tests if (root / t).is_file()),
                *FAST,
                *module.pytest_args,
            ],
            "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "no:xdist"],
            "use_git_change_detection": False,
            "process_isolation": module.isolation,
        },
        "tool.pytest.ini_options": ini,
    }


def _toml(tables: dict[str, dict]) -> str:
    """The few TOML shapes this driver writes: strings, numbers, booleans, lists of strings."""
    out = []
    for table, values in tables.items():
        out.append(f"[{table}]")
        out += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        out.append("")
    return "\n".join(out)
