"""The layers import one way: base -> data -> models -> training -> runs -> {report, export} ->
serve -> cli. Read from the source (ast, function-level imports included), nothing is run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"flaxdigits": "flaxdigits", "export": "flaxdigits.export", "serve": "flaxdigits.serve"}

# Module (or package prefix) -> layer. A module may import its own layer and the ones below.
LAYERS = {
    "flaxdigits": 0,  # the package itself: __version__ only
    "flaxdigits.core.contract": 0,
    "flaxdigits.core.atomic": 0,
    "flaxdigits.core.files": 0,
    "flaxdigits.serve.runtime": 0,  # the JAX-free runtime export checks its files with
    "flaxdigits.release.archive": 0,
    "flaxdigits.data.idx": 1,
    "flaxdigits.data.sources": 1,
    "flaxdigits.data.mnist": 1,
    "flaxdigits.models.conv_pool": 2,
    "flaxdigits.models": 2,
    "flaxdigits.training.config": 3,
    "flaxdigits.training.augment": 3,
    "flaxdigits.training.state": 3,
    "flaxdigits.training.evaluate": 3,
    "flaxdigits.training.steps": 3,
    "flaxdigits.training.mesh": 3,
    "flaxdigits.training.checkpoint": 3,
    "flaxdigits.training.curves": 3,
    "flaxdigits.training.checkpoint_v1": 3,
    "flaxdigits.training.distributed": 3,
    "flaxdigits.training.train": 3,
    "flaxdigits.runs": 4,
    "flaxdigits.report": 5,
    "flaxdigits.report.compare": 5,
    "flaxdigits.report.robustness": 5,
    "flaxdigits.report.plots": 5,
    "flaxdigits.export": 5,
    "flaxdigits.serve": 6,
    "flaxdigits.evaluation": 6,  # of exported models: JAX-free, on the serve runtime
    "flaxdigits.cli": 7,
    "flaxdigits.cli.main": 7,
    "flaxdigits.cli.parser": 7,
    "flaxdigits.__main__": 7,
}
TRAINING = {name for name, layer in LAYERS.items() if layer == 3}
# What the JAX-free side (serve, and the data and base layers it stands on) may never import.
TRAINING_STACK = {
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "jax2onnx",
    "orbax",
    "tensorboardX",
    "tensorboard",
}


def module_name(path: Path, root: Path = ROOT) -> str:
    top, *rest = path.relative_to(root).with_suffix("").parts
    if rest[-1] == "__init__":
        rest = rest[:-1]
    return ".".join([PACKAGES[top], *rest])


def layer_of(module: str) -> int | None:
    """The layer of a flaxdigits module: its own entry, else its package's."""
    while module:
        if module in LAYERS:
            return LAYERS[module]
        module = module.rpartition(".")[0]
    return None


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


SOURCES = sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py"))


def test_every_source_module_has_a_layer():
    unplaced = [module_name(p) for p in SOURCES if layer_of(module_name(p)) is None]
    assert not unplaced, f"add these modules to LAYERS: {unplaced}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_layer_above_its_own(path):
    me = module_name(path)
    mine = layer_of(me)
    upward = sorted(
        imported
        for imported in imports_of(path)
        if imported.startswith("flaxdigits.")
        and layer_of(imported) is not None
        and layer_of(imported) > mine
    )
    assert not upward, f"{me} (layer {mine}) imports upward: {upward}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_serving_side_never_imports_the_training_stack(path):
    me = module_name(path)
    if layer_of(me) not in (0, 1, 6):  # base, data, serve
        return
    imported = imports_of(path)
    stack = sorted(m for m in imported if m.split(".")[0] in TRAINING_STACK)
    assert not stack, f"{me} must stay JAX-free, imports {stack}"
    higher = sorted(
        m for m in imported if m.startswith("flaxdigits.") and layer_of(m) in (2, 3, 4, 5)
    )
    assert not higher, f"{me} reads only model files and the contract, imports {higher}"


@pytest.mark.parametrize("path", sorted((ROOT / "export").rglob("*.py")), ids=lambda p: p.name)
def test_export_takes_runs_through_the_runs_api_never_training_internals(path):
    internals = sorted(m for m in imports_of(path) if layer_of(m) == 3 and m in TRAINING)
    assert not internals, f"export/{path.name} imports training internals {internals}"


def test_report_and_export_do_not_import_each_other():
    for path in SOURCES:
        me, imported = module_name(path), imports_of(path)
        if me.startswith("flaxdigits.export"):
            assert "flaxdigits.report.compare" not in imported, me
        if me == "flaxdigits.report.compare":
            assert not any(m.startswith("flaxdigits.export") for m in imported), me


def test_the_rule_catches_what_it_guards(tmp_path):
    # The reader itself, seen red: a serve module importing jax and training, an upward import.
    folder = tmp_path / "serve"
    folder.mkdir()
    bad = folder / "bad.py"
    bad.write_text("def f():\n    import jax\n    from flaxdigits.training.train import train\n")
    assert {"jax", "flaxdigits.training.train", "flaxdigits.training.train.train"} <= imports_of(
        bad
    )
    assert (
        layer_of(module_name(bad, tmp_path)) == 6
        and layer_of("flaxdigits.training.train.train") == 3
    )
