"""`flaxdigits predict` inputs: files, folders (recursive, image files only), glob patterns and
`-` (paths on stdin), expanded in a stable order; what names no image is an error line."""

from __future__ import annotations

import io
import json
import os

import pytest

from flaxdigits.serve.inputs import InputProblem, expand
from flaxdigits.serve.predict import predict_files
from tests.support.strategies import DIGIT_PNG


@pytest.fixture
def tree(tmp_path):
    """a.png, notes.txt, b/c.JPG, b/d/e.png, b/d/f.gif.txt, empty/, and a folder link loop."""
    for rel in ("a.png", "b/c.JPG", "b/d/e.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(DIGIT_PNG)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "b/d/f.gif.txt").write_text("not an image either")
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "b", tmp_path / "b/d/loop")
    return tmp_path


def _rel(items, root):
    return [
        i if isinstance(i, InputProblem) else os.path.relpath(i, root).replace(os.sep, "/")
        for i in items
    ]


def test_a_folder_gives_its_image_files_recursively_sorted_without_following_links(tree):
    assert _rel(expand([str(tree)]), tree) == ["a.png", "b/c.JPG", "b/d/e.png"]


def test_files_are_taken_as_given_even_without_an_image_extension(tree):
    args = [str(tree / "notes.txt"), str(tree / "a.png"), str(tree / "missing.png")]
    assert list(expand(args)) == args


def test_glob_patterns_expand_sorted_and_recursively_with_double_star(tree):
    assert _rel(expand([str(tree / "**" / "*.png")]), tree) == ["a.png", "b/d/e.png"]
    assert _rel(expand([str(tree / "b" / "*")]), tree) == ["b/c.JPG", "b/d/e.png"]
    (problem,) = expand([str(tree / "*.webp")])
    assert problem == InputProblem(str(tree / "*.webp"), "no file matches this pattern")


def test_a_literal_name_with_pattern_characters_is_not_globbed(tree):
    odd = tree / "[x].png"
    odd.write_bytes(DIGIT_PNG)
    assert list(expand([str(odd)])) == [str(odd)]


def test_dash_reads_paths_from_stdin_literally_and_expands_folders(tree):
    stdin = io.StringIO(f"{tree / 'a.png'}\n\n{tree / 'b'}\r\n{tree / '*.png'}\n")
    got = _rel(expand(["-"], stdin=stdin), tree)
    assert got == ["a.png", "b/c.JPG", "b/d/e.png", "*.png"]  # the pattern stays a (missing) path


def test_a_folder_without_images_is_a_problem(tree):
    assert list(expand([str(tree / "empty")])) == [
        InputProblem(
            str(tree / "empty"),
            "no image files (.png, .jpg, .jpeg, .webp, .gif, .bmp) in this folder",
        )
    ]


def test_predict_prints_one_json_line_per_image_and_errors_as_lines_exit_1(tree, toy_model, capsys):
    stdin = io.StringIO(f"{tree / 'notes.txt'}\n")
    status = predict_files(
        toy_model, [str(tree), str(tree / "empty"), "-"], as_json=True, stdin=stdin
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert [os.path.relpath(r["file"], tree) for r in records] == [
        "a.png",
        os.path.join("b", "c.JPG"),
        os.path.join("b", "d", "e.png"),
        "empty",
        "notes.txt",
    ]
    assert [r.get("digit") for r in records[:3]] == [3, 3, 3]
    assert "no image files" in records[3]["error"] and "error" in records[4]
    assert predict_files(toy_model, [str(tree / "b")], as_json=True) == 0
