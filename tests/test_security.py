"""Security defaults that are not behaviour elsewhere: dependency floors and the pickle boundary."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Published advisories and the first fixed release (checked 2026-11 against OSV/GHSA).
ADVISORY_FLOORS = {
    "pillow": ((12, 3), "several memory-safety and DoS advisories fixed in 12.3.0"),
    "gradio": ((6, 20), "CVE-2026-59806: SSRF/open redirect via /gradio_api/file= before 6.20.0"),
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def test_installed_and_required_versions_are_above_published_advisories():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    for name, (floor, why) in ADVISORY_FLOORS.items():
        assert _version(metadata.version(name)) >= floor, (name, why)
        pins = [r for r in requirements if re.match(rf"{name}\s*[<>=!~;\[]", r, re.IGNORECASE)]
        assert pins, name
        for pin in pins:
            lower = re.search(r">=\s*([\d.]+)", pin)
            assert lower and _version(lower.group(1)) >= floor, (pin, why)


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
