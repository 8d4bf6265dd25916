"""The JAX-free runtime every served answer goes through.

Untrusted image bytes decoded under caps (decode), one preprocessing for drawings and uploads
(preprocess), an exported model checked and run by onnxruntime (predictor, session, onnx_wire).
numpy, Pillow and onnxruntime only: what the edge install runs.
"""
