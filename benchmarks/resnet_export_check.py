"""Issue 32 screening: export a trained residual-net run (or a fresh one) the way export/ does
(jax2onnx at opset 13, export.onnx_graph.to_onnx_model), run it in onnxruntime, compare with JAX,
count the graph's ops (Transpose above all), and time batch-1 latency on 1 intra-op thread.

    FLAXDIGITS_RESNET=SPEC .venv/bin/python -m benchmarks.resnet_export_check [RUN_DIR]
"""

from __future__ import annotations

import collections
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.onnx_graph import serialize, to_onnx_model
from flaxdigits.data.mnist import load_mnist
from flaxdigits.core import contract
from flaxdigits.models import count_params, create_model, predict_proba


def latency(sess, x1: np.ndarray, n: int = 1000) -> float:
    for _ in range(50):
        sess.run(None, {contract.INPUT_NAME: x1})
    times = []
    for _ in range(n):
        t = time.perf_counter()
        sess.run(None, {contract.INPUT_NAME: x1})
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main() -> None:
    if len(sys.argv) > 1:
        from flaxdigits.runs import load_run

        run = load_run(Path(sys.argv[1]))
        model, name = run.model, run.config.model
    else:
        model, name = create_model("resnet"), "resnet"
    print("model", name, "params", count_params(model))
    data = serialize(to_onnx_model(model, name))
    print(f"float ONNX: {len(data):,} bytes")
    import onnx

    proto = onnx.load_from_string(data)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    print("ops:", dict(sorted(ops.items())), "Transpose:", ops.get("Transpose", 0))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    mnist = load_mnist("auto", log=lambda _: None)
    x = contract.scale_pixels(mnist.test_images[:1000])[..., None].astype(np.float32)
    ref = np.asarray(predict_proba(model, x))
    got = sess.run(None, {contract.INPUT_NAME: x})[0]
    print(f"max |onnx - jax| probability over 1000 test digits: {np.max(np.abs(got - ref)):.2e}; "
          f"argmax agreement {np.mean(got.argmax(1) == ref.argmax(1)):.4f}")
    print(f"batch-1 latency, 1 intra-op thread, median of 1000: {latency(sess, x[:1]):.3f} ms")


if __name__ == "__main__":
    main()
