"""What of the training stack a JAX-free entry point pulls in, once it has done its work.

    heavy_imports.py [--import MODULE ...] [--predict MODEL IMAGE] [--page MODELS_DIR]

Imports the modules, predicts IMAGE through `flaxdigits predict --json` and the Predictor, builds
the drawing page; then prints one JSON line {"code": predict's exit status or null, "heavy": the
top-level packages of HEAVY that got imported} and exits 1 if any did.
"""

import argparse
import importlib
import json
import sys

# Never on the serve side: the training stack, the exporter, the plotting library, PyTorch (onnx,
# when installed, lends the predictor its checker).
HEAVY = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax",
    "jax2onnx",
    "tensorboardX",
    "tensorboard",
    "matplotlib",
    "torch",
)

parser = argparse.ArgumentParser()
parser.add_argument("--import", dest="modules", nargs="*", default=[])
parser.add_argument("--predict", nargs=2, metavar=("MODEL", "IMAGE"))
parser.add_argument("--page", metavar="MODELS_DIR")
args = parser.parse_args()

for module in args.modules:
    importlib.import_module(module)
code = None
if args.predict:
    from flaxdigits.cli.main import main
    from flaxdigits.serve.runtime import predictor, preprocess

    model, image = args.predict
    code = main(["predict", "--json", "--model", model, image])
    predictor.Predictor(model, threads=1).predict(preprocess.preprocess(image).image)
if args.page:
    from flaxdigits.serve.page import app

    app.build_app(app.load_predictors(args.page))
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
print(json.dumps({"code": code, "heavy": heavy}))
sys.exit(1 if heavy else 0)
