"""The model release format, read and written in one place: a deterministic .tar.gz with its
SHA256SUMS (archive), and reading a release back with every checksum verified (reader).

Standard library only: the edge install reads releases with no JAX and no onnxruntime.
"""
