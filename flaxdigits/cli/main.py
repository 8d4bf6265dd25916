"""The `flaxdigits` command: parses arguments and calls one library function per subcommand.

Every subcommand is a row of `flaxdigits.cli.commands.COMMANDS` (its arguments and its handler);
here, `main` parses with `flaxdigits.cli.parser`, runs the row the command line names, and turns
expected failures into one line and an exit status. Heavy imports (JAX, onnxruntime, gradio)
happen inside the handler that needs them, so `flaxdigits predict` on a board without JAX never
imports it.
"""

from __future__ import annotations

import os
import sys

from flaxdigits.cli.commands import BY_NAME
from flaxdigits.cli.parser import build_parser

# 128 + SIGPIPE: what a shell reports for a command its downstream reader closed on.
EXIT_BROKEN_PIPE = 141


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so that the interpreter's exit-time flush of the
    closed pipe cannot raise again. A stdout that is no real file (tests' StringIO) is left be."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # None, or io.UnsupportedOperation
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run one subcommand; expected failures print one line, not a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return BY_NAME[args.command].run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read our output went away (`flaxdigits predict *.png | head -1`): stop quietly
        # with the shell's SIGPIPE status, as coreutils do.
        if os.environ.get("FLAXDIGITS_DEBUG"):
            raise
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (OSError, ValueError, RuntimeError) as e:
        # Our errors (MNISTError, CheckpointError, ExportError, ModelLoadError, ...) subclass
        # these and carry a message that says what to do. FLAXDIGITS_DEBUG=1: the traceback.
        if os.environ.get("FLAXDIGITS_DEBUG"):
            raise
        print(f"flaxdigits {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
