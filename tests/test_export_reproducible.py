"""Two trainings of one config export the same bytes: a release can be rebuilt from scratch.

The checkpoints of the two runs differ (Orbax's timestamps and random file ids, the history's
timings); their arrays do not, and the exported files name the arrays' digest only.
"""

from __future__ import annotations

import pytest

from flaxdigits.data.mnist import MNIST
from flaxdigits.export.onnx_export import export_run
from flaxdigits.training import checkpoint
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.train import train

pytestmark = pytest.mark.slow  # trains twice on a slice of real MNIST, exports on all of it


def test_two_trainings_of_one_config_export_byte_identical_files(tmp_path, mnist):
    tiny = MNIST(
        mnist.train_images[:2000],
        mnist.train_labels[:2000],
        mnist.test_images[:200],
        mnist.test_labels[:200],
        source="subset",
    )
    config = TrainConfig(model="mlp", epochs=1, batch_size=50)
    for name in ("a", "b"):
        train(config, tmp_path / name, data=tiny, progress=False, log=lambda _: None)
        export_run(tmp_path / name, tmp_path / name / "models" / "mlp.onnx", int8=True)
    a, b = (checkpoint.pointer(tmp_path / name) for name in ("a", "b"))
    assert a["sha256"] != b["sha256"]  # the checkpoints' files differ, as Orbax writes them
    assert a["state_sha256"] == b["state_sha256"]  # their arrays do not
    for file in ("mlp.onnx", "mlp.int8.onnx", "mlp.json"):
        got = [(tmp_path / name / "models" / file).read_bytes() for name in ("a", "b")]
        assert got[0] == got[1], file
