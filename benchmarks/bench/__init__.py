"""`make bench`: training, inference, page and process benchmarks -> JSON + BENCHMARKS.md.

Not a test: it measures and writes down. Medians of >= 3 runs; compile time reported apart.
Usage: python -m benchmarks.bench [--quick] [--no-peer] [--models models] [--out benchmarks]
(--rewrite: measure nothing, write BENCHMARKS.md again from results.json)

machine: the machine and its matmul rate in each precision; training: flaxdigits in float32 and
bfloat16 against its PyTorch peer (float32 and autocast bfloat16) and each precision's compute
floor; inference: onnxruntime, canvases, the predictor's cold start (cold_start, in a process of
its own); page: round trips through gradio_client; markdown: BENCHMARKS.md from the results;
main: the command.
"""
