"""Export (installed as flaxdigits.export): what is built from trained runs and exported files.

ONNX float and int8 (onnx_export, onnx_graph, compat, latency), the release and its model card
(release, model_card), the Hugging Face Space folder (space) and the static site (site).
"""
