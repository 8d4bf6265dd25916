"""The `flaxdigits` command's arguments: one argparse subparser per row of the commands table.

`flaxdigits.cli.main` parses with `build_parser()` and runs the row `args.command` names. Only
the standard library and the base layer are imported here (serve's epilog reads serve/budgets'
list, which needs Pillow but no gradio), so `flaxdigits --help` is fast everywhere.
"""

from __future__ import annotations

import argparse

from flaxdigits import __version__
from flaxdigits.cli.commands import COMMANDS

DESCRIPTION = (
    "Handwritten digits (MNIST) end to end: train an MLP and a CNN in JAX/Flax, export them to "
    "ONNX, and read digits with onnxruntime from the command line or a drawing page. "
    "`flaxdigits SUBCOMMAND --help` describes each subcommand."
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand of the table, in the table's order."""
    parser = argparse.ArgumentParser(prog="flaxdigits", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"flaxdigits {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        options = {}
        if command.epilog is not None:  # printed as written: it holds its own line breaks
            options = {
                "epilog": command.epilog(),
                "formatter_class": argparse.RawDescriptionHelpFormatter,
            }
        command.add_arguments(sub.add_parser(command.name, help=command.help, **options))
    return parser
