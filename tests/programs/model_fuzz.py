"""Mutated and foreign bytes offered as models: each loads or is refused cleanly (JSON report)."""

import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import onnx

from flaxdigits.serve.runtime.predictor import ModelLoadError, Predictor

good = Path(sys.argv[1]).read_bytes()
out_dir = Path(sys.argv[2])
rng = random.Random(int(sys.argv[3]))
weights = onnx.load_model_from_string(good).graph.initializer[0].raw_data
blob = (good.index(weights), good.index(weights) + len(weights))
structure = [i for i in range(len(good)) if not blob[0] <= i < blob[1]]
foreign = [p.read_bytes() for p in sorted(Path(sys.argv[4]).iterdir()) if p.is_file()]
stages, slowest = {}, 0.0
for i in range(int(sys.argv[5])):
    if i < len(foreign):
        data = foreign[i]  # every corpus file, offered as a model
    else:
        data = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            # mostly the graph, names and metadata: the weights are 98% of the bytes
            at = rng.choice(structure) if rng.random() < 0.8 else rng.randrange(len(data))
            at = min(at, len(data) - 1)
            op = rng.choice(["flip", "flip", "set", "set", "cut", "insert", "delete"])
            if op == "flip":
                data[at] ^= 1 << rng.randrange(8)
            elif op == "set":
                data[at] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
            elif op == "cut":
                del data[max(at, 1) :]
            elif op == "insert":
                data[at:at] = rng.randbytes(rng.randint(1, 8))
            else:
                del data[at : at + rng.randint(1, 8)]
    # Every other case without the onnx package, as on a board: onnxruntime parses alone.
    sys.modules["onnx"] = None if i % 2 else onnx
    path = out_dir / "fuzzed.onnx"
    path.write_bytes(bytes(data))
    t = time.perf_counter()
    try:
        p = Predictor(path, manifest=None)
        probs = p.predict(np.zeros((28, 28), np.float32)).probabilities
        assert len(probs) == 10
        stage = "loaded and predicted"
    except ModelLoadError as e:
        text = str(e)
        assert "Traceback" not in text and "\\n" not in text, text
        stage = (
            "refused: names or metadata not UTF-8"
            if "not UTF-8" in text
            else "refused: wire walk"
            if "not a valid ONNX file" in text
            else "refused: onnx.checker"
            if "not a valid ONNX model" in text
            else "refused: onnxruntime"
            if "onnxruntime" in text
            else "refused: I/O or metadata checks"
        )
    slowest = max(slowest, time.perf_counter() - t)
    stages[stage] = stages.get(stage, 0) + 1
print(json.dumps({"stages": stages, "slowest": slowest}))
