"""What `flaxdigits` says about itself: --version, help on every argument, and a --help that stays
light (no training stack imported to print it)."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys

import pytest

import flaxdigits
from flaxdigits.cli.main import main
from flaxdigits.cli.parser import build_parser

# The training and export stack: never imported to print help (the edge install has none of it).
HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "jax2onnx", "tensorboardX", "matplotlib")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_version_prints_the_package_name_and_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"flaxdigits {flaxdigits.__version__}\n"
    assert flaxdigits.__version__ == importlib.metadata.version("flaxdigits")  # as installed


@pytest.mark.parametrize("name", list(_subparsers()))
def test_every_positional_argument_has_help(name):
    positionals = [a for a in _subparsers()[name]._actions if not a.option_strings]
    assert all(a.help and a.help.strip() for a in positionals), [a.dest for a in positionals]


def test_help_and_version_import_no_training_stack():
    # -X importtime lists every module the interpreter imports, one line each, on stderr.
    for argv in (["--help"], ["--version"], ["train", "--help"]):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "flaxdigits", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {
            line.rsplit("|", 1)[-1].strip().split(".")[0]
            for line in done.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "flaxdigits" in imported  # the listing is there to read
        assert not imported & set(HEAVY), (argv, sorted(imported & set(HEAVY)))
