"""The base every layer stands on: the shared contract, atomic writes, capped file reads.

Standard library and numpy only: no JAX, no onnxruntime, no gradio.
"""
