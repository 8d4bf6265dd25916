"""Subcommands of the release format: release (pack), verify (check), space (a Hugging Face Space
folder from a release).

For each subcommand, `NAME_arguments(parser)` declares its arguments and `run_NAME(args)` calls
the one library function that does the work; `flaxdigits.cli.commands` pairs them in its table.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def release_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models",
        default="models",
        help="directory with the exported models (and the gate, when it was exported)",
    )
    p.add_argument("--reports", default="reports", help="canvas and robustness reports, if any")
    p.add_argument("--out", default="dist")
    p.add_argument("--version", help="release version (default: the flaxdigits version)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument(
        "--int8-only",
        action="store_true",
        help="leave the float32 files out: a small release (the one `make demo` serves)",
    )


def run_release(args: argparse.Namespace) -> int:
    from flaxdigits.export.release import build_release

    build_release(
        args.models,
        args.out,
        reports_dir=args.reports,
        version=args.version,
        latency=not args.no_latency,
        variants=("int8",) if args.int8_only else ("float32", "int8"),
    )
    return 0


def verify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("release", help="a release .tar.gz or folder")


def run_verify(args: argparse.Namespace) -> int:
    from flaxdigits.release.reader import read_release

    verified = read_release(args.release)
    total = sum(len(data) for data in verified.files.values())
    of = "its SHA256SUMS" if Path(args.release).is_dir() else "the archive"
    print(
        f"{args.release}: {verified.name}: {len(verified.files)} files, {total:,} bytes, "
        f"every sha256 matches; sha256 of {of}: {verified.sha256}"
    )
    return 0


def space_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("release", help="a release .tar.gz or folder")
    p.add_argument("--out", default="dist/space")


def run_space(args: argparse.Namespace) -> int:
    from flaxdigits.export.space import build_space

    out = build_space(args.release, args.out)
    print(
        f"{out}: app.py, requirements.txt, packages.txt, README.md, release/, flaxdigits/ "
        f"(run: python {out / 'app.py'})"
    )
    return 0
