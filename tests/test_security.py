"""The pickle boundary: only the hash-verified data source unpickles. (Dependency advisories:
`make lint` runs pip-audit, benchmarks/audit.py.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pickle_is_used_only_by_the_hash_verified_data_source():
    files = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    files = [f for f in files if (ROOT / f).is_file()]  # a deletion not yet committed is gone
    users = {
        f for f in files if re.search(r"^\s*(import|from)\s+pickle\b", (ROOT / f).read_text(), re.M)
    }
    # The tests beside sources.py build pickles to feed its restricted unpickler.
    allowed = {"flaxdigits/data/sources.py", "tests/test_sources.py", "tests/test_mnist_parsers.py"}
    assert users <= allowed, users
