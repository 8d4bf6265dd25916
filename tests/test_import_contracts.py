"""The import contracts of pyproject.toml (import-linter) hold, and each one catches what it guards.

Every case plants one import in a copy of the package laid out as installed and checks that
exactly the contract guarding it breaks, naming the planted line: a contract never seen failing
proves nothing. The checks read the source (nothing is imported or run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.installed import ROOT, installed_tree, lint_imports

CONTRACTS = ("layers", "jax-free", "export-reads-runs", "report-reads")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return installed_tree(tmp_path_factory.mktemp("installed"))


def test_every_contract_holds_on_the_package_as_installed(pristine):
    result = lint_imports(pristine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


# (contract, file as installed, planted import, who the report must name)
PLANTED = [
    ("layers", "core/atomic.py", "from flaxdigits.data import idx", "flaxdigits.core.atomic"),
    (
        "layers",
        "report/compare.py",
        "from flaxdigits.export import latency",
        "flaxdigits.report.compare",
    ),
    (
        "layers",
        "serve/runtime/decode.py",
        "from flaxdigits.serve.page import views",
        "flaxdigits.serve.runtime.decode",
    ),
    ("jax-free", "serve/runtime/predictor.py", "import jax", "flaxdigits.serve.runtime.predictor"),
    ("jax-free", "evaluation/distort.py", "import optax", "flaxdigits.evaluation.distort"),
    # A new module takes the rules of its package, and the contract follows imports through it.
    ("jax-free", "serve/page/helper.py", "from flaxdigits import runs", "flaxdigits.runs"),
    ("jax-free", "export/site.py", "from flaxdigits import models", "flaxdigits.export.site"),
    (
        "export-reads-runs",
        "export/onnx_export.py",
        "from flaxdigits.training import steps",
        "flaxdigits.export.onnx_export",
    ),
    (
        "report-reads",
        "report/robustness.py",
        "from flaxdigits.training.train import train",
        "flaxdigits.report.robustness",
    ),
]


@pytest.mark.parametrize(
    "contract, file, line, named", PLANTED, ids=[f"{c}:{f}" for c, f, _, _ in PLANTED]
)
def test_a_planted_import_breaks_the_contract_that_guards_it(tmp_path, contract, file, line, named):
    tree = installed_tree(tmp_path / "installed")
    path = tree / "flaxdigits" / file
    old = path.read_text() if path.exists() else '"""A module added later."""\n'
    path.write_text(old + f"\n\ndef planted():\n    {line}  # noqa\n")
    for other in CONTRACTS:
        result = lint_imports(tree, other)
        broken = result.returncode != 0
        assert broken == (other == contract), (other, result.stdout[-3000:] + result.stderr)
        if broken:
            assert named in result.stdout and "BROKEN" in result.stdout, result.stdout[-3000:]


def test_the_package_root_imports_nothing_of_its_own():
    # `import flaxdigits.serve` on a board runs flaxdigits/__init__.py first: it stays bare.
    tree = ast.parse((ROOT / "flaxdigits" / "__init__.py").read_text())
    imported = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert all(
        isinstance(node, ast.ImportFrom) and node.module == "__future__" for node in imported
    ), [ast.unparse(node) for node in imported]
