"""What serves (installed as flaxdigits.serve), JAX-free: the runtime (runtime/), the drawing page
and its guard (page/), and the predict command (predict, inputs). numpy, Pillow and onnxruntime,
plus gradio for the page.
"""
