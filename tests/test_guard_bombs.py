"""Bomb limits that hold under any concurrency: the editor's values are decoded by decode.py.

tests/programs/bomb_race.py runs editor decodes (a bomb and an honest drawing each) in threads
beside bomb uploads and beside code inside `warnings.simplefilter("ignore")`, as Gradio's editor
decodes, for 100 rounds in one process. Through Gradio's own editor preprocessing
(`--gradio-decode`) 30 of 36 editor bombs were decoded in 3 rounds; through ours none may be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RACE = Path(__file__).resolve().parent / "programs" / "bomb_race.py"
ROUNDS = 100


def test_editor_bombs_are_refused_before_decoding_100_rounds_in_a_row():
    result = subprocess.run(
        [sys.executable, str(RACE), str(ROUNDS)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    ops = ROUNDS * 3 * 4  # rounds x threads per kind x operations per thread
    assert report["big_loads"] == 0  # no image over the pixel cap was ever decoded
    assert report["outcomes"] == {
        "editor bomb: refused": ops,
        "editor honest: read": ops,
        "upload bomb: refused": ops,
    }
