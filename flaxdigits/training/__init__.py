"""Training in JAX/Flax NNX: the frozen config and its recipes, the one train state, the jitted
step and on-device augmentation, evaluation during training, the device mesh and multi-host
jobs, checkpoints (Orbax, behind a sha256 pointer), live curves, and the loop (train.train).
"""
