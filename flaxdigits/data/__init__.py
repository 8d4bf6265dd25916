"""Verified MNIST: the IDX format and its canonical digests (idx), the real sources it comes from
(sources), and the loader every caller uses (mnist: load_mnist, the splits). numpy only.
"""
