"""The soak's figure: RSS, temp dir (bytes and files), log and requests over time, with the
phases marked and the budgets drawn."""

from __future__ import annotations

from pathlib import Path

from flaxdigits.serve.page import budgets

SERIES = [  # (sample key, axis label, unit, budget line)
    ("rss_mib", "server RSS (MiB)", 1, None),
    ("temp_bytes", "temp dir (MiB)", 1 << 20, budgets.TEMP_DIR_BYTES),
    ("temp_files", "temp dir (files)", 1, budgets.TEMP_DIR_FILES),
    ("log_bytes", "server log (KB)", 1000, None),
    ("requests", "requests done", 1, None),
]


def plot(samples, phases, path: Path):
    """One panel per series, phases as dotted lines (named on the RSS panel); PNG at path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(len(SERIES), 1, figsize=(9, 12), sharex=True)
    for ax, (key, label, unit, budget) in zip(axes, SERIES, strict=True):
        values = [s[key] / unit for s in samples]
        ax.plot(t, values)
        ax.set_ylabel(label)
        if budget is not None:
            ax.axhline(budget / unit, color="red", linestyle="--")
        for name, (a, _) in phases.items():
            ax.axvline(a, color="grey", linestyle=":")
            if key == "rss_mib":
                ax.text(a, max(values), f" {name}", va="top", fontsize=8)
    axes[-1].set_xlabel("seconds")
    fig.suptitle("make soak: honest-only, then honest + hostile (issues 18 and 34)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
