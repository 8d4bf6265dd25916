"""Serving side (installed as flaxdigits.serve): numpy, Pillow and onnxruntime only, never JAX."""
