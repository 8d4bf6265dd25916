"""The docs cannot rot: every command in a shell block of the user docs is checked against the code
(a make target the Makefile has, a flaxdigits subcommand and flags its parser accepts, a path that
exists or that a named command makes), and the checker itself is seen catching each kind of error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flaxdigits.cli.parser import build_parser
from tests.support import docs

ROOT = docs.ROOT
DOCS = sorted(
    p.relative_to(ROOT)
    for p in [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "docs").glob("*.md")]
    if p.is_file()
)


@pytest.fixture(scope="module")
def code():
    targets = docs.make_targets((ROOT / "Makefile").read_text())
    return targets, docs.subcommand_options(build_parser())


@pytest.mark.parametrize("doc", DOCS, ids=str)
def test_every_command_in_the_docs_is_backed_by_the_code(doc: Path, code):
    problems = docs.check_doc(str(doc), (ROOT / doc).read_text(), *code)
    assert not problems, "\n".join(map(str, problems))


def _problems(body: str, code) -> list[str]:
    return [p.text for p in docs.check_doc("planted.md", f"```bash\n{body}\n```\n", *code)]


def test_a_wrong_flag_is_caught(code):
    assert _problems("flaxdigits predict --model models/cnn.onnx --jsn digit.png", code) == [
        "flaxdigits predict has no option --jsn (in: flaxdigits predict --model "
        "models/cnn.onnx --jsn digit.png)"
    ]
    assert _problems(".venv/bin/flaxdigits trian --model cnn", code)[0].startswith(
        "flaxdigits has no subcommand 'trian'"
    )


def test_a_missing_make_target_is_caught(code):
    assert _problems("make all && make serv MODELS=models", code) == [
        "make has no target 'serv' (in: make all && make serv MODELS=models)"
    ]


def test_a_missing_file_is_caught(code):
    found = _problems("python -m benchmarks.nothing\nflaxdigits export runs/cnn --out x.onnx", code)
    assert found == [
        "no module benchmarks.nothing in the repository (in: python -m benchmarks.nothing)",
        "runs/cnn does not exist in the repository and no command makes it "
        "(in: flaxdigits export runs/cnn --out x.onnx)",
    ]
    assert _problems("less docs/nowhere.md", code)[0].startswith("docs/nowhere.md does not")


def test_a_recipe_trained_into_another_recipes_folder_is_caught(code):
    found = _problems("flaxdigits train --model cnn --out runs/robust/cnn", code)
    assert found and "add --recipe robust" in found[0]
    assert (
        _problems("flaxdigits train --model cnn --recipe robust --out runs/robust/cnn", code) == []
    )


def test_what_commands_make_and_what_the_repository_holds_pass(code):
    body = "\n".join(
        [
            "make all   # the main job",
            "sudo make browser-deps",
            "FLAXDIGITS_CACHE=/tmp/c .venv/bin/flaxdigits serve --models models --port 7861",
            "flaxdigits export runs/robust/cnn --out models/cnn.onnx --int8 \\",
            "  # continued",
            "less flaxdigits/training/config.py reports/comparison.md",
        ]
    )
    assert _problems(body, code) == []
