"""The docs cannot rot: every command in a shell block of the user docs is checked against the code
(a make target the Makefile has, a flaxdigits subcommand and flags its parser accepts, a path that
exists or that a named command makes, a program of the venv run from it), every relative link and
image points at a file that exists or that a named command makes (and at a heading of it), and the
checker itself is seen catching each kind of error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flaxdigits.cli.parser import build_parser
from tests.support import docs

ROOT = docs.ROOT
DOCS = sorted(
    p.relative_to(ROOT)
    for p in [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        ROOT / "CHANGELOG.md",
        *(ROOT / "docs").rglob("*.md"),
    ]
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


@pytest.mark.parametrize("doc", DOCS, ids=str)
def test_every_command_quoted_in_the_prose_is_backed_by_the_code(doc: Path, code):
    problems = docs.check_inline(str(doc), (ROOT / doc).read_text(), *code)
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("doc", DOCS, ids=str)
def test_every_command_the_venv_has_is_run_from_it(doc: Path):
    problems = docs.check_venv(str(doc), (ROOT / doc).read_text())
    assert not problems, "\n".join(map(str, problems))


@pytest.mark.parametrize("doc", DOCS, ids=str)
def test_every_link_in_the_docs_points_at_a_file_and_heading_that_exist(doc: Path, code):
    problems = docs.check_links(str(doc), (ROOT / doc).read_text(), code[0])
    assert not problems, "\n".join(map(str, problems))


def test_the_guides_and_experiment_logs_are_all_read():
    names = {p.as_posix() for p in DOCS}
    assert {"README.md", "CONTRIBUTING.md", "docs/quickstart.md"} <= names
    assert any(n.startswith("docs/experiments/") for n in names)


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


def test_a_command_quoted_in_a_table_or_sentence_is_checked_too(code):
    text = "\n".join(
        [
            "| Draw | `make demo`, then `.venv/bin/flaxdigits predict --jsn x.png` |",
            "Run `make serv`; `flaxdigits SUBCOMMAND --help` says more; `ls nowhere`.",
            "```bash",
            "make inside-a-block-is-not-inline",
            "```",
        ]
    )
    found = [p.text for p in docs.check_inline("planted.md", text, *code)]
    assert found == [
        "flaxdigits predict has no option --jsn (in: `.venv/bin/flaxdigits predict --jsn x.png`)",
        "make has no target 'serv' (in: `make serv`)",
    ]


def test_a_command_run_outside_the_venv_is_caught():
    def found(body: str) -> list[str]:
        return [p.text for p in docs.check_venv("planted.md", f"```bash\n{body}\n```\n")]

    assert found("make all\nflaxdigits serve --models models") == [
        "flaxdigits runs outside the venv: write .venv/bin/flaxdigits or activate .venv first "
        "(in: flaxdigits serve --models models)"
    ]
    assert found("python -m benchmarks.screenshot")[0].startswith("python runs outside the venv")
    assert found("pytest tests/test_docs.py")[0].startswith("pytest runs outside the venv")
    venv = [
        ".venv/bin/flaxdigits serve --models models",
        "~/flaxdigits/bin/flaxdigits verify r.tar.gz",
        "python3 -m venv ~/flaxdigits && python3 -m http.server -d build/web",
        ". .venv/bin/activate && flaxdigits --help && python -m benchmarks.screenshot",
    ]
    assert found("\n".join(venv)) == []


def test_what_commands_make_and_what_the_repository_holds_pass(code):
    body = "\n".join(
        [
            "make all   # the main job",
            "sudo make browser-deps",
            "FLAXDIGITS_CACHE=/tmp/c .venv/bin/flaxdigits serve --models models --port 7861",
            "flaxdigits export runs/robust/cnn --out models/cnn.onnx --int8 \\",
            "  # continued",
            "less flaxdigits/training/config.py reports/comparison.md",
            "less docs/model-card.md docs/images/page.png demo/flaxdigits-models-0.1.0-0a1b.tar.gz",
            "flaxdigits predict --model dist/r.tar.gz --release-file cnn.int8.onnx tests/corpus",
        ]
    )
    assert _problems(body, code) == []


def test_what_makes_a_committed_file_must_exist(code):
    targets = code[0]
    assert docs._maker_problems(
        "docs/images/page.png", "python -m benchmarks.nothing", targets, ROOT
    ) == [
        "docs/images/page.png: made by `python -m benchmarks.nothing`, whose module does not exist"
    ]
    assert docs._maker_problems("demo", "referenc", targets, ROOT) == [
        "demo: made by `make referenc`, which does not exist"
    ]


def _link_problems(text: str, code, doc: str = "planted.md") -> list[str]:
    return [p.text for p in docs.check_links(doc, text, code[0])]


def test_a_broken_link_or_image_is_caught(code):
    text = 'See [the guide](docs/nowhere.md) and\n![the page](docs/images/nothing.png "x").\n'
    assert _link_problems(text, code) == [
        "link docs/nowhere.md: docs/nowhere.md does not exist in the repository and no command "
        "makes it",
        "link docs/images/nothing.png: docs/images/nothing.png does not exist in the repository "
        "and no command makes it",
    ]


def test_a_link_from_a_subfolder_is_read_from_that_folder(code):
    doc = "docs/experiments/planted.md"
    assert _link_problems("[up](../../README.md), [back](../quickstart.md)", code, doc) == []
    assert _link_problems("[here](quickstart.md)", code, doc) == [
        "link quickstart.md: docs/experiments/quickstart.md does not exist in the repository and "
        "no command makes it"
    ]
    assert _link_problems("[away](../../../etc/passwd)", code, doc) == [
        "link ../../../etc/passwd: outside the repository"
    ]


def test_a_missing_heading_is_caught(code):
    assert _link_problems("[how](CONTRIBUTING.md#no-such-heading)", code) == [
        "link CONTRIBUTING.md#no-such-heading: CONTRIBUTING.md has no heading #no-such-heading"
    ]
    assert _link_problems("[how](CONTRIBUTING.md#running-the-tests)", code) == []
    assert _link_problems("# A `code` heading: here\n\n[up](#a-code-heading-here)", code) == []
    assert _link_problems("# Here\n\n[up](#there)", code) == [
        "link #there: planted.md has no such heading"
    ]


def test_built_files_urls_and_code_are_not_taken_for_missing_files(code):
    text = "\n".join(
        [
            "[the report](reports/comparison.md), [the model](models/cnn.onnx),",
            "[the card](docs/model-card.md), ![the page](docs/images/page.png),",
            "<http://127.0.0.1:7860>, [JAX](https://docs.jax.dev/en/latest/installation.html),",
            "`[not a link](nowhere.md)`, [mail](mailto:someone@example.com)",
            "```markdown",
            "[also not a link](nowhere.md)",
            "```",
        ]
    )
    assert _link_problems(text, code) == []
