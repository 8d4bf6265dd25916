"""flaxdigits: MNIST digit recognition trained in JAX/Flax, exported to ONNX, served anywhere.

Importing the package imports nothing heavy: JAX only comes in with the training modules.
"""

__version__ = "0.1.0"
