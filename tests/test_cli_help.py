"""What `flaxdigits` says about itself: --version, help on every argument, and a --help that stays
light (no training stack imported to print it)."""

from __future__ import annotations

import argparse
import importlib.metadata
import re
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


# What a user cannot decode: the project's work log (issue numbers, numbered stops) and documents
# that are not theirs to read.
INTERNAL = re.compile(r"\bissue\s*#?\d+|\bstop\s+\d+|\bbrief\b|seed report|TESTING\.md", re.I)


def _all_help() -> str:
    texts = [build_parser().format_help()]
    texts += [parser.format_help() for parser in _subparsers().values()]
    return "\n".join(texts)


def test_no_help_text_refers_to_the_work_log_or_internal_documents():
    text = _all_help()
    assert "train" in text and "--trusted-proxy" in text  # every subcommand's help is read
    assert INTERNAL.findall(text) == []
    assert INTERNAL.findall("fixed in issue 18 (stop 25, see the brief)") == [
        "issue 18",
        "stop 25",
        "brief",
    ]
