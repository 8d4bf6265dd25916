"""The PyTorch reference: the same two models and training recipe, written as a user would.

Optional peer for `make bench` only (never imported by flaxdigits; its tests skip without
torch): `pip install torch==2.13.0`. Same data split (last 10% held out), Adam lr 1e-3, batch B,
cross-entropy, a shuffling DataLoader over tensors already in memory. In float32, or in
PyTorch's CPU mixed precision: the forward pass and loss under
`torch.autocast("cpu", dtype=torch.bfloat16)` (oneDNN's bfloat16 kernels, AMX where the CPU has
it), float32 parameters and optimizer, as PyTorch's documentation has a user write it.
"""

from __future__ import annotations

import time

import numpy as np


def build(name: str):
    """The MLP or CNN as torch.nn.Sequential, Keras-like init (glorot-uniform, zero bias)."""
    import torch
    from torch import nn

    if name == "mlp":
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(5408, 100),
            nn.ReLU(),
            nn.Linear(100, 10),
        )
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    count = sum(p.numel() for p in model.parameters())
    if count != {"mlp": 101_770, "cnn": 542_230}[name]:
        raise RuntimeError(f"PyTorch {name} has {count} parameters: not the same model")
    return model.to(torch.float32), torch


MODES = {"float32": "float32", "bfloat16": "autocast bf16"}  # precision -> how tables name it


def autocast(precision: str):
    """The context the forward pass and loss run in: torch.autocast to bfloat16 on the CPU for
    "bfloat16", disabled (float32) for "float32"."""
    import torch

    if precision not in MODES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {list(MODES)}")
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16")


def train_epochs(
    name: str,
    mnist,
    batch_size: int,
    epochs: int,
    seed: int = 0,
    threads: int = 2,
    precision: str = "float32",
    n_train: int = 54_000,
):
    """Train `epochs` epochs on the first n_train images in precision; returns per-epoch
    seconds and the final test accuracy (evaluated in float32)."""
    import torch.utils.data as tud

    model, torch = build(name)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    x = torch.from_numpy(mnist.train_images[:n_train].astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(mnist.train_labels[:n_train].astype(np.int64))
    loader = tud.DataLoader(tud.TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = torch.nn.CrossEntropyLoss()
    seconds = []
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            with autocast(precision):
                loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        seconds.append(time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        xt = torch.from_numpy(mnist.test_images.astype(np.float32) / 255.0).unsqueeze(1)
        pred = model(xt).argmax(1).numpy()
    return {
        "seconds": seconds,
        "test_accuracy": float((pred == mnist.test_labels).mean()),
        "torch": torch.__version__,
        "precision": precision,
        "mode": MODES[precision],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
