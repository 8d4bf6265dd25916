"""Train a tiny MLP run into RUN_DIR for EPOCHS epochs, resuming: the process tests kill midway."""

import sys
from pathlib import Path

from flaxdigits.data.mnist import MNIST, load_mnist
from flaxdigits.training.config import TrainConfig
from flaxdigits.training.train import train

m = load_mnist("cache")
tiny = MNIST(
    m.train_images[:220], m.train_labels[:220], m.test_images[:100], m.test_labels[:100], "subset"
)
cfg = TrainConfig(model="mlp", epochs=int(sys.argv[2]), batch_size=20, eval_batch_size=100)
train(cfg, Path(sys.argv[1]), data=tiny, resume=True, progress=False, log=lambda _: None)
