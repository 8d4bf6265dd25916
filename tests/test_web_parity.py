"""The browser demo's JavaScript against the Python reference, in Node (issue 15).

The same canvases (tests/corpus's digit images, MNIST test digits redrawn large, stroke drawings)
go through web/preprocess.js and serve/runtime/preprocess.py: the 28x28 inputs must agree within
MAX_PIXEL_DIFF, and empty canvases must be empty on both sides. The site's onnxruntime-web
(WebAssembly, in Node) and Python's onnxruntime must then give both models' probabilities within
MAX_PROB_DIFF on the same inputs, and the same digit end to end.

The port reproduces Pillow's integer arithmetic (fixed-point Lanczos weights, box reduce, box
blur, alpha compositing, luma) and numpy's float32 steps, and on this set the two agree exactly.
The one place they may differ is the Lanczos weights' sin(): V8's and the C library's can differ
in the last bit, which can move a 22-bit fixed-point weight by one unit and a pixel by 1/255.
"""

from __future__ import annotations

import numpy as np
import pytest

from flaxdigits.core import contract
from flaxdigits.export import site as web
from flaxdigits.serve.runtime.predictor import Predictor
from flaxdigits.serve.runtime.preprocess import EmptyCanvasError, preprocess
from tests.support import web_support as ws

MAX_PIXEL_DIFF = 2  # of 255, per pixel of the 28x28 input
MAX_PROB_DIFF = 1e-4
MNIST_DIGITS = 60


@pytest.fixture(scope="module")
def node():
    return ws.require_node()


@pytest.fixture(scope="module")
def canvases(mnist) -> dict[str, np.ndarray]:
    out = {**ws.corpus_canvases(), **ws.stroke_canvases()}
    out.update(ws.mnist_canvases(mnist.test_images, MNIST_DIGITS))
    return out


def python_inputs(canvases, method):
    """name -> the reference 28x28 uint8 input, or None for an empty canvas."""
    out = {}
    for name, rgba in canvases.items():
        try:
            out[name] = np.rint(preprocess(rgba, method).image * 255).astype(np.uint8)
        except EmptyCanvasError:
            out[name] = None
    return out


def js_inputs(node, site, canvases, method, workdir):
    cases = [{"rgba": rgba, "method": method} for rgba in canvases.values()]
    result = ws.run_node(node, site, cases, workdir)
    return result, {
        name: None if r["pixels"] is None else np.array(r["pixels"], np.uint8).reshape(28, 28)
        for name, r in zip(canvases, result["cases"], strict=True)
    }


# "seed": box's name before 0.2, which both sides still read as box.
@pytest.mark.parametrize("method", [*contract.PREPROCESS_METHODS, "seed"])
def test_js_preprocessing_matches_python_on_the_fixed_canvases(
    node, canvases, toy_dir, tmp_path, method
):
    site = tmp_path / "site"
    web.build_site(toy_dir, site)
    _, js = js_inputs(node, site, canvases, method, tmp_path)
    py = python_inputs(canvases, method)
    empty_mismatch = [n for n in canvases if (py[n] is None) != (js[n] is None)]
    assert not empty_mismatch, f"empty on one side only: {empty_mismatch}"
    diffs = {
        n: int(np.abs(py[n].astype(int) - js[n].astype(int)).max())
        for n in canvases
        if py[n] is not None
    }
    worst = max(diffs, key=diffs.get)
    differing = sum(int((py[n] != js[n]).sum()) for n in canvases if py[n] is not None)
    families = {n.split("/")[0] for n in canvases}
    print(
        f"\n{method}: {len(canvases)} canvases ({', '.join(sorted(families))}), "
        f"{sum(v is None for v in py.values())} empty on both sides; max pixel difference "
        f"{diffs[worst]}/255 ({worst}), {differing} differing pixels in all"
    )
    assert diffs[worst] <= MAX_PIXEL_DIFF, worst
    # The set must exercise every branch of the port: large canvases (speckle filter, box
    # reduce), small ones, transparent and dark ones, and empty ones.
    assert {"corpus", "drawn", "mnist"} <= families
    assert sum(v is None for v in py.values()) >= 3


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_onnxruntime_web_matches_python_onnxruntime(
    node, canvases, exported_models, tmp_path, variant
):
    int8 = variant == "int8"
    site = tmp_path / "site"
    web.build_site(exported_models, site, int8=int8)
    suffix = ".int8.onnx" if int8 else ".onnx"
    predictors = {
        name: Predictor(exported_models / f"{name}{suffix}") for name in contract.MODEL_NAMES
    }
    names, inputs = [], []
    for method in contract.PREPROCESS_METHODS:
        for name, image in python_inputs(canvases, method).items():
            if image is not None:
                names.append((method, name))
                inputs.append(contract.scale_pixels(image))
    x = np.stack(inputs)  # (N, 28, 28) float32
    cases = [{"rgba": canvases[name], "method": method} for method, name in names]
    result = ws.run_node(node, site, cases, tmp_path, inputs=x)
    worst = 0.0
    for model, predictor in predictors.items():
        py = predictor.predict_batch(x)  # (N, 10)
        js = np.array(result["inputs"][model], np.float64)
        delta = np.abs(py - js)
        worst = max(worst, float(delta.max()))
        assert delta.max() <= MAX_PROB_DIFF, (model, names[int(delta.max(axis=1).argmax())])
        assert (py.argmax(axis=1) == js.argmax(axis=1)).all(), model
        # End to end: each side's own preprocessing, then its own runtime.
        ends = np.array([c["probabilities"][model] for c in result["cases"]])
        agree = ends.argmax(axis=1) == py.argmax(axis=1)
        assert agree.all(), [names[i] for i in np.flatnonzero(~agree)]
    print(f"\n{variant}: {len(names)} inputs x {len(predictors)} models: max |dp| {worst:.2e}")
