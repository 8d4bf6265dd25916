"""Offline evaluation of exported models, JAX-free: every MNIST test digit deformed (distort) over a
grid of rotations, slants, thicknesses, scales and shifts (robustness), or redrawn the way a
person's canvas looks (canvases), read through the served preprocessing by the ONNX files.
"""
