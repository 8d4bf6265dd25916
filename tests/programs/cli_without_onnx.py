"""`flaxdigits ARGS` with the onnx package unimportable, as on a board that has only onnxruntime."""

import sys

sys.modules["onnx"] = None  # an import of onnx now raises ImportError

from flaxdigits.cli.main import main  # noqa: E402 - after onnx is hidden

sys.exit(main(sys.argv[1:]))
