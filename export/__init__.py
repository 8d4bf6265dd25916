"""Export (installed as flaxdigits.export): trained runs to self-contained ONNX files."""
