"""Run exported files in another Python's onnxruntime (an old one in a throwaway venv) and compare.

How MIN_ONNXRUNTIME was checked, repeatable (needs the package index once, never in tests):

  python3.8 -m venv /tmp/ort17 && /tmp/ort17/bin/pip install onnxruntime==1.7.0 "numpy<1.24"
  flaxdigits compat /tmp/ort17/bin/python models/*.onnx
"""

from __future__ import annotations

import json
import subprocess  # noqa: S404 - runs the given interpreter on a fixed script, no shell
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flaxdigits.core import contract
from flaxdigits.export.onnx_export import onnxruntime_probabilities

# Runs inside the other interpreter: numpy and onnxruntime only, Python 3.6+ syntax.
_PROBE = """
import json, sys
import numpy as np
import onnxruntime as ort
x = np.load(sys.argv[1])
out = {"onnxruntime": ort.__version__, "files": {}}
for path in sys.argv[2:]:
    try:
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out["files"][path] = s.run([%r], {%r: x})[0].tolist()
    except Exception as e:
        out["files"][path] = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
print(json.dumps(out))
""" % (contract.OUTPUT_NAME, contract.INPUT_NAME)  # noqa: UP031 - the probe must stay Python-3.6 text


def check_with(python: str, paths: Sequence[Path], images: np.ndarray) -> dict[str, Any]:
    """Load and run each file in `python`'s onnxruntime; compare with this onnxruntime."""
    with tempfile.TemporaryDirectory(prefix="flaxdigits-compat-") as tmp:
        data = Path(tmp) / "images.npy"
        np.save(data, images.astype(np.float32))
        done = subprocess.run(  # noqa: S603 - argv list, interpreter chosen by the user
            [python, "-c", _PROBE, str(data), *map(str, paths)],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{python} could not run the probe: {last}")
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    report: dict[str, Any] = {"onnxruntime": theirs["onnxruntime"], "files": {}}
    for path in paths:
        got = theirs["files"][str(path)]
        if isinstance(got, str):
            report["files"][str(path)] = {"loads": False, "error": got}
            continue
        other = np.asarray(got, np.float32)
        ours = onnxruntime_probabilities(Path(path), images)
        report["files"][str(path)] = {
            "loads": True,
            "max_abs_diff": float(np.max(np.abs(other - ours))),
            "argmax_agreement": float(np.mean(other.argmax(-1) == ours.argmax(-1))),
        }
    return report


def check_files(python: str, paths: Sequence[Path], images: int = 500) -> dict[str, Any]:
    """check_with on the first `images` MNIST test images; the report says which files load."""
    from flaxdigits.data.mnist import load_mnist

    return check_with(python, paths, contract.to_model_input(load_mnist().test_images[:images]))
