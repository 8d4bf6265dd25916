"""make bench's training half: the matmul rate in each precision, the floor of each model in
each, and the PyTorch peer in float32 and under torch.autocast bfloat16 (torch is optional: the
peer's tests skip without it)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench import machine, training
from flaxdigits.data.idx import MNIST
from flaxdigits.models import train_flops_per_image


def test_the_matmul_rate_is_measured_in_each_precision():
    for precision in ("float32", "bfloat16"):
        assert machine.matmul_gflops(n=128, repeats=3, precision=precision) > 0
    with pytest.raises(ValueError, match="float32"):
        machine.matmul_gflops(n=128, repeats=3, precision="float16")


def _epochs(seconds: float) -> dict:
    return {"seconds_per_epoch": seconds, "epoch_seconds": [seconds]}


def test_each_precisions_floor_is_its_flops_over_its_own_best_matmul_rate():
    results = {
        training.row_key(name, batch, precision): _epochs(seconds)
        for name in ("mlp", "cnn")
        for batch in (32, 128)
        for precision, seconds in (("float32", 2.0), ("bfloat16", 3.0))
    }
    f = training.floor(results, {"float32": [100.0, 200.0], "bfloat16": [500.0, 800.0]})
    assert f["matmul_gflops"] == 200.0 and f["bfloat16"]["matmul_gflops"] == 800.0
    cnn_flops = train_flops_per_image("cnn") * training.TRAIN_IMAGES
    bf16 = f["bfloat16"]["cnn"]
    assert bf16["floor_seconds_per_epoch"] == pytest.approx(cnn_flops / 800e9)
    assert bf16["measured_over_floor_b128"] == pytest.approx(3.0 / (cnn_flops / 800e9))
    assert f["cnn"]["measured_over_floor_b32"] == pytest.approx(2.0 / (cnn_flops / 200e9))


def test_rows_keep_their_float32_keys_and_name_bfloat16():
    assert training.row_key("cnn", 32, "float32") == "cnn/32"
    assert training.row_key("cnn", 32, "bfloat16") == "cnn/32/bfloat16"
    peer = {"cnn/32": _epochs(9.0), "cnn/32/bfloat16": _epochs(6.0), "mlp/32": _epochs(1.0)}
    assert training.fastest_peer(peer, "cnn", 32) == ("bfloat16", peer["cnn/32/bfloat16"])
    assert training.fastest_peer(peer, "mlp", 32) == ("float32", peer["mlp/32"])
    assert training.fastest_peer(peer, "mlp", 128) is None


def test_the_pytorch_peer_computes_in_bfloat16_only_under_autocast(mnist):
    torch = pytest.importorskip("torch")
    from benchmarks import torch_peer

    for name in ("mlp", "cnn"):
        model, _ = torch_peer.build(name)
        x = torch.zeros((2, 1, 28, 28))
        for precision, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            with torch_peer.autocast(precision):
                assert model(x).dtype == dtype
    small = MNIST(
        mnist.train_images[:640],
        mnist.train_labels[:640],
        mnist.test_images[:200],
        mnist.test_labels[:200],
        "first 640 training images",
    )
    r = torch_peer.train_epochs("mlp", small, 32, 1, precision="bfloat16", n_train=640)
    assert r["precision"] == "bfloat16" and len(r["seconds"]) == 1
    assert r["mode"] == "autocast bf16" and np.isfinite(r["test_accuracy"])
