"""Reading the docs' shell blocks as a user would type them, and checking each command against the
code: a `make TARGET` the Makefile has, a `flaxdigits SUBCOMMAND --flag` its parser accepts, a file
path that exists in the repository or that a named command makes; a program only the venv has is
run from it. And the docs' relative links and images: each points at a file of the repository (or
one a named command makes) and, into a markdown file, at a heading it has.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
SHELLS = {"bash", "sh", "shell", "console"}
# What commands make: a path pattern (fnmatch; "/**" matches the folder and anything under it),
# and what makes it: a make target, which must exist, or `python -m MODULE`, whose module must. A
# doc may name such a path without it being in the repository; any other path must exist. Most
# are git-ignored build outputs; the reference build's files (demo/, the model card, the page's
# picture) are committed, and named here so that a checkout without them still reads true.
GENERATED = [
    (".venv/**", "install"),
    (".venv-serve/**", "serve-venv"),
    (".venv-edge/**", "edge-venv"),
    ("runs", "train"),
    ("runs/original/**", "train"),
    ("runs/robust/**", "train"),
    ("models", "export"),
    ("models/*.onnx", "export"),
    ("models/*.json", "export"),
    ("models/original/**", "export"),
    ("reports/**", "report"),
    ("dist/**", "release"),
    ("build/web/**", "web"),
    ("build/smoke/**", "smoke"),
    ("build/mutation/**", "mutation"),
    ("build/installed/**", "lint"),
    ("web/node_modules/**", "web-deps"),
    ("demo/**", "reference"),
    ("docs/model-card.md", "reference"),
    ("docs/images/page.png", "python -m benchmarks.screenshot"),
]
PATH_LIKE = re.compile(r"^(?:\./)?[\w.-]+(?:/[\w.*{},-]+)*/?$")
EXTENSIONS = (".py", ".md", ".toml", ".json", ".onnx", ".js", ".mjs", ".html", ".css", ".txt")
TOP_LEVEL = ("flaxdigits/", "export/", "serve/", "tests/", "benchmarks/", "web/", "docs/", ".ci/")


@dataclass(frozen=True)
class Problem:
    """One thing a doc says that the code does not back."""

    doc: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def shell_blocks(text: str) -> Iterator[tuple[int, str]]:
    """(line number of the block's first line, body) of every bash/sh/shell/console block."""
    for match in FENCE.finditer(text):
        if match.group(1) in SHELLS:
            yield text.count("\n", 0, match.start(2)) + 1, match.group(2)


def command_lines(body: str) -> Iterator[tuple[int, str]]:
    """(offset, one command line) of a block: continuations joined, comments and prompts cut."""
    pending, start = "", 0
    for offset, raw in enumerate(body.splitlines()):
        line = raw.strip()
        if not pending:
            start = offset
        if line.startswith("$ "):
            line = line[2:]
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full and not full.startswith("#"):
            yield start, full


def simple_commands(line: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (split at && || ; | and comments), as argv lists."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:
        return
    argv: list[str] = []
    for token in [*tokens, ";"]:
        if token and set(token) <= set(";&|"):
            while argv and re.match(r"^\w+=", argv[0]):  # VAR=value before a command
                argv.pop(0)
            if argv and argv[0] == "sudo":
                argv.pop(0)
            if argv:
                yield argv
            argv = []
        else:
            argv.append(token)


def make_targets(makefile: str) -> set[str]:
    """Every target the Makefile defines by name (rules and .PHONY lists)."""
    targets = set()
    for line in makefile.splitlines():
        phony = re.match(r"^\.PHONY\s*:(.*)$", line)
        if phony:
            targets |= set(phony.group(1).replace("\\", " ").split())
            continue
        rule = re.match(r"^([A-Za-z][\w.-]*(?:\s+[A-Za-z][\w.-]*)*)\s*:(?!=)", line)
        if rule:
            targets |= set(rule.group(1).split())
    return targets


def subcommand_options(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """{subcommand: its option strings}, and "" for the top-level options."""
    out = {"": {s for a in parser._actions for s in a.option_strings}}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = {s for a in sub._actions for s in a.option_strings}
    return out


def check_argv(argv: list[str], targets: set[str], options: dict[str, set[str]]) -> list[str]:
    """What is wrong with one command of the docs (empty: nothing)."""
    if Path(argv[0]).name.startswith("python") and argv[1:2] == ["-m"] and len(argv) > 2:
        argv = argv[2:]  # python -m MODULE ...: the module is the program
        if argv[0].startswith(("benchmarks.", "tests.")) and not _module_file(argv[0]):
            return [f"no module {argv[0]} in the repository"]
    program = Path(argv[0]).name
    if program == "make":
        wanted = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
        return [f"make has no target {t!r}" for t in wanted if t not in targets]
    if program == "flaxdigits":
        return _check_flaxdigits(argv[1:], options)
    return []


def _module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a dotted module of this repository (a module or a package), or None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _check_flaxdigits(args: list[str], options: dict[str, set[str]]) -> list[str]:
    args = [a.strip("[]") for a in args]  # a synopsis's [--optional flags]
    words = [a for a in args if not a.startswith("-")]
    if not words:
        flags = {a.split("=")[0] for a in args if a.startswith("-")}
        return [f"flaxdigits has no option {f}" for f in sorted(flags - options[""])]
    sub = words[0]
    if sub not in options:
        return [f"flaxdigits has no subcommand {sub!r}"]
    flags = {a.split("=")[0] for a in args if a.startswith("--") or re.match(r"^-\w$", a)}
    problems = [f"flaxdigits {sub} has no option {f}" for f in sorted(flags - options[sub])]
    if sub == "train":
        problems += _recipe_matches_out(args)
    return problems


def _recipe_matches_out(args: list[str]) -> list[str]:
    """`train --out runs/RECIPE/NAME` trains that recipe only when --recipe says so."""
    from flaxdigits.core.contract import RECIPE_NAMES
    from flaxdigits.training.config import TrainConfig

    value = dict(zip(args, args[1:], strict=False))
    out, recipe = value.get("--out", ""), value.get("--recipe", TrainConfig.recipe)
    named = out.split("/")[1] if out.startswith("runs/") and out.count("/") >= 2 else None
    if named in RECIPE_NAMES and named != recipe:
        return [f"train --out {out} trains the {recipe} recipe there: add --recipe {named}"]
    return []


def path_tokens(argv: list[str]) -> Iterator[str]:
    """The arguments of a command that name a file or folder of the repository (not what the
    command itself writes, the value of --out, nor a file inside a release, --release-file's)."""
    for previous, token in zip(argv, argv[1:], strict=False):
        if previous in ("--out", "-o", "--release-file"):
            continue  # what the command writes, or a file inside a release
        value = token.split("=", 1)[1] if token.startswith("-") and "=" in token else token
        if value.startswith(("-", "http", "/", "~", "$")) or not PATH_LIKE.match(value):
            continue
        if any(ch in value for ch in "*{}") or re.search(r"[A-Z]{3,}", value):
            continue  # a glob or a placeholder (RELEASE, NAME), not one file
        value = value.removeprefix("./")
        generated = value.split("/")[0] in {p.split("/")[0] for p, _ in GENERATED}
        if value.startswith(TOP_LEVEL) or generated or value.endswith(EXTENSIONS):
            yield value


def check_path(path: str, targets: set[str], root: Path = ROOT) -> list[str]:
    """A path the docs name exists, or a make target that exists makes it."""
    if (root / path).exists():
        return []
    path = path.rstrip("/")
    for pattern, maker in GENERATED:
        folder = pattern.removesuffix("/**")
        if fnmatch.fnmatchcase(path, pattern) or path == folder:
            return _maker_problems(path, maker, targets, root)
    return [f"{path} does not exist in the repository and no command makes it"]


def _maker_problems(path: str, maker: str, targets: set[str], root: Path) -> list[str]:
    """Nothing when what makes path exists: a make target, or a module run by python -m."""
    module = maker.removeprefix("python -m ")
    if module != maker:
        ok = _module_file(module, root) is not None
        return [] if ok else [f"{path}: made by `{maker}`, whose module does not exist"]
    return [] if maker in targets else [f"{path}: made by `make {maker}`, which does not exist"]


def check_doc(
    doc: str, text: str, targets: set[str], options: dict[str, set[str]]
) -> list[Problem]:
    """Every problem of one markdown file's shell blocks."""
    problems = []
    for first, body in shell_blocks(text):
        for offset, line in command_lines(body):
            for argv in simple_commands(line):
                found = check_argv(argv, targets, options)
                found += [p for t in path_tokens(argv) for p in check_path(t, targets)]
                problems += [Problem(doc, first + offset, f"{what} (in: {line})") for what in found]
    return problems


# `code` in the prose (a table's cell, a sentence): one backtick pair on one line.
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def check_inline(
    doc: str, text: str, targets: set[str], options: dict[str, set[str]]
) -> list[Problem]:
    """Every problem of the `make ...` and `flaxdigits ...` commands quoted inline in a doc's
    prose, outside its fenced blocks (a placeholder subcommand, `flaxdigits SUBCOMMAND`, aside)."""
    prose = FENCE.sub(_blank, text)
    problems = []
    for match in INLINE.finditer(prose):
        line = prose.count("\n", 0, match.start()) + 1
        for argv in simple_commands(match.group(1)):
            if Path(argv[0]).name not in ("make", "flaxdigits") or _placeholder(argv):
                continue
            found = check_argv(argv, targets, options)
            found += [p for t in path_tokens(argv) for p in check_path(t, targets)]
            problems += [Problem(doc, line, f"{what} (in: `{match.group(1)}`)") for what in found]
    return problems


def _placeholder(argv: list[str]) -> bool:
    words = [a for a in argv[1:] if not a.startswith("-")]
    return bool(words) and words[0].isupper()


# What `make install` puts in .venv/bin only: run bare, before the doc activates a venv, each is
# "command not found" (or the system Python without the package) after `make all`.
VENV_PROGRAMS = {"flaxdigits", "pytest", "tensorboard", "hf", "huggingface-cli", "lint-imports"}
VENV_MODULES = ("flaxdigits", "benchmarks.", "tests.")


def check_venv(doc: str, text: str) -> list[Problem]:
    """Every command of a doc's shell blocks that only the venv has, run bare before the doc
    says `source .venv/bin/activate` (or `. VENV/bin/activate`)."""
    activated, problems = False, []
    for first, body in shell_blocks(text):
        for offset, line in command_lines(body):
            for argv in simple_commands(line):
                if argv[0] in ("source", ".") and argv[1:2] and argv[1].endswith("bin/activate"):
                    activated = True
                elif not activated and _needs_venv(argv):
                    what = f"{argv[0]} runs outside the venv: write .venv/bin/{argv[0]}"
                    what += f" or activate .venv first (in: {line})"
                    problems.append(Problem(doc, first + offset, what))
    return problems


def _needs_venv(argv: list[str]) -> bool:
    if argv[0] in VENV_PROGRAMS:
        return True
    module = argv[2] if argv[0] in ("python", "python3") and argv[1:2] == ["-m"] else ""
    return len(argv) > 2 and module.startswith(VENV_MODULES)


# [text](target) and ![alt](target), with an optional "title"; the target has no spaces.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\)")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text with fenced blocks and inline code blanked (same length and line numbers)."""
    return INLINE_CODE.sub(_blank, FENCE.sub(_blank, text))


def _blank(match: re.Match) -> str:
    return re.sub(r"[^\n]", " ", match.group(0))


def links(text: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every markdown link and image outside code."""
    prose = _prose(text)
    for match in LINK.finditer(prose):
        yield prose.count("\n", 0, match.start()) + 1, match.group(1)


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a markdown text (repeats numbered -1, -2 as GitHub does)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub(_blank, text)):
        base = anchor(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def check_link(doc: str, target: str, targets: set[str], text: str = "", root: Path = ROOT):
    """What is wrong with a link of doc (a path from the root, its text given): a relative target
    names a file that exists or that a make target makes, and a #fragment into a markdown file
    (doc itself when the target is only a fragment) names one of its headings."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("//"):
        return []  # https:, mailto:, ...: not this repository's
    path, _, fragment = target.partition("#")
    if not path:
        return [] if fragment in anchors(text) else [f"link {target}: {doc} has no such heading"]
    file = ((root / doc).parent / path).resolve()
    try:
        rel = file.relative_to(root.resolve()).as_posix()
    except ValueError:
        return [f"link {target}: outside the repository"]
    if not file.exists():
        return [f"link {target}: {p}" for p in check_path(rel, targets, root)]
    if fragment and file.suffix == ".md" and fragment not in anchors(file.read_text()):
        return [f"link {target}: {rel} has no heading #{fragment}"]
    return []


def check_links(doc: str, text: str, targets: set[str], root: Path = ROOT) -> list[Problem]:
    """Every problem of one markdown file's relative links and images."""
    return [
        Problem(doc, line, found)
        for line, target in links(text)
        for found in check_link(doc, target, targets, text, root)
    ]
