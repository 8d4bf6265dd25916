"""A Hugging Face Space (Gradio SDK) folder assembled from a verified release.

`build_space` writes a folder a Gradio-SDK Space runs as it is: app.py (the `serve` command on the
release beside it), requirements.txt (the serve side's dependencies, from this package's own
metadata), README.md (the Space's front matter), packages.txt (the Debian packages a Space
installs: jemalloc, which `serve` runs the page on), the verified release unpacked under
release/, and the JAX-free part of flaxdigits beside app.py.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import shutil
from pathlib import Path

from flaxdigits.core.atomic import write_bytes_atomic, write_text_atomic
from flaxdigits.release import reader as release

# What of flaxdigits/ the serve side imports, files and whole packages (the import contracts keep
# serve on these and data).
VENDORED_BASE = (
    "__init__.py",
    "__main__.py",
    "cli",
    "core",
    "data",
    "release",
)
SERVE_EXTRA = "serve"
DEBIAN_PACKAGES = ("libjemalloc2",)  # serve/page/allocator.py

APP_PY = '''\
"""Hugging Face Space (Gradio SDK) entry point: the flaxdigits drawing page, JAX-free.

Serves the release in release/ after verifying every checksum. Host and port come from
--host/--port, else GRADIO_SERVER_NAME/GRADIO_SERVER_PORT (set by Spaces), else 127.0.0.1:7860.
"""

import sys
from pathlib import Path

from flaxdigits.cli.main import main

if __name__ == "__main__":
    release = Path(__file__).resolve().parent / "release"
    sys.exit(main(["serve", "--models", str(release), *sys.argv[1:]]))
'''

SPACE_README = """\
---
title: flaxdigits
emoji: "✍️"
colorFrom: gray
colorTo: blue
sdk: gradio
sdk_version: {gradio}
python_version: "3.11"
app_file: app.py
pinned: false
license: apache-2.0
---

# flaxdigits: draw a digit

An MLP and a CNN trained on MNIST with JAX/Flax, exported to ONNX and run by onnxruntime on the
CPU: no JAX here. Release {release}; its model card is release/MODEL_CARD.md.

Run it anywhere: `pip install -r requirements.txt && python app.py` (add `--host 0.0.0.0` to
serve your network).
"""


class SpaceError(ValueError):
    """The Space folder cannot be assembled where asked; the message says why."""


def requirements() -> list[str]:
    """The serve side's requirements, from this package's metadata: core plus the serve extra."""
    out = []
    for req in importlib.metadata.requires("flaxdigits") or []:
        spec, _, marker = req.partition(";")
        extra = re.search(r"extra\s*==\s*[\"']([^\"']+)", marker)
        if not marker or (extra and extra.group(1) == SERVE_EXTRA):
            out.append(spec.strip())
    return out


def build_space(release_path, out) -> Path:
    """Assemble a Space folder from a verified release.

    Args:
        release_path: a release archive or unpacked release folder.
        out: the folder to (re)write, e.g. dist/space; its previous content is replaced.

    Returns:
        The folder written.

    Raises:
        ReleaseError: the release fails verification.
        SpaceError: out exists and is not a Space folder this function wrote.
    """
    out = Path(out)
    verified = release.read_release(release_path)
    if out.exists() and not (out / "app.py").is_file() and any(out.iterdir()):
        raise SpaceError(f"{out} exists and is not a Space folder: choose another output")
    shutil.rmtree(out, ignore_errors=True)
    import gradio  # only to name the SDK version the Space runs

    package = out / "flaxdigits"
    base, serve_dir = _folder("flaxdigits"), _folder("flaxdigits.serve")
    for name in VENDORED_BASE:
        _vendor(base / name, package / name)
    _vendor(serve_dir, package / "serve")
    for rel, data in verified.files.items():
        write_bytes_atomic(out / "release" / rel, data)
    write_text_atomic(out / "app.py", APP_PY)
    write_text_atomic(out / "requirements.txt", "\n".join(requirements()) + "\n")
    write_text_atomic(out / "packages.txt", "\n".join(DEBIAN_PACKAGES) + "\n")
    readme = SPACE_README.format(gradio=gradio.__version__, release=verified.name)
    write_text_atomic(out / "README.md", readme)
    return out


def _folder(package: str) -> Path:
    """Where an installed package's files are (found, not imported: nothing of it runs here)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SpaceError(f"{package} is not installed as a package: reinstall flaxdigits")
    return Path(next(iter(spec.submodule_search_locations)))


def _vendor(source: Path, dest: Path) -> None:
    """Copy a module, or a package's every module (sub-packages included), into the Space."""
    files = sorted(source.rglob("*.py")) if source.is_dir() else [source]
    for path in files:
        rel = path.relative_to(source) if source.is_dir() else Path()
        write_bytes_atomic(dest / rel, path.read_bytes())
