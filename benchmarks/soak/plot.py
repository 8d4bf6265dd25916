"""The soak's figure: the server's memory (RSS and what malloc holds), its stores, temp dir
(bytes and files), log and the requests over time, with the phases marked and the budgets drawn."""

from __future__ import annotations

from pathlib import Path

from flaxdigits.serve.page import budgets


def sample(key):
    return lambda s: s.get(key)


def store(key):
    return lambda s: s.get("stores", {}).get(key)


def fraction(key):
    """How full a store is (its size over its bound)."""

    def get(s):
        stores = s.get("stores", {})
        bound = stores.get("bounds", {}).get(key)
        return stores[key] / bound if bound and stores.get(key) is not None else None

    return get


PANELS = [  # (axis label, [(line label, value of a sample)], unit, budget line)
    (
        "server memory (MiB)",
        [
            ("RSS", sample("rss_mib")),
            ("malloc: in use", store("malloc_in_use_mib")),
            ("malloc: freed, kept", store("malloc_free_mib")),
        ],
        1,
        None,
    ),
    (
        "stores (fraction of bound)",
        [
            (name, fraction(name))
            for name in ("sessions", "pending_sessions", "event_analytics", "rate_buckets")
        ],
        1,
        None,
    ),
    ("temp dir (MiB)", [("bytes", sample("temp_bytes"))], 1 << 20, budgets.TEMP_DIR_BYTES),
    ("temp dir (files)", [("files", sample("temp_files"))], 1, budgets.TEMP_DIR_FILES),
    ("server log (KB)", [("bytes", sample("log_bytes"))], 1000, None),
    ("requests done", [("requests", sample("requests"))], 1, None),
]


WINDOW = "measured window"  # the phase the RSS slope is fitted over: shaded


def panel(ax, samples, phases, label, lines, unit, budget) -> None:
    """One panel: its lines over time, the budget dashed, the phases dotted (the RSS slope's
    window shaded, as the phase "measured window")."""
    t = [s["t"] for s in samples]
    top = 0.0
    for name, get in lines:
        values = [None if (v := get(s)) is None else v / unit for s in samples]
        ax.plot(t, [float("nan") if v is None else v for v in values], label=name)
        top = max([top, *(v for v in values if v is not None)])
    ax.set_ylabel(label)
    if len(lines) > 1:
        ax.legend(fontsize=7, loc="lower right")
    if budget is not None:
        ax.axhline(budget / unit, color="red", linestyle="--")
    for name, (a, b) in phases.items():
        if name == WINDOW:
            ax.axvspan(a, b, color="grey", alpha=0.12)
            continue
        ax.axvline(a, color="grey", linestyle=":")
        if label == PANELS[0][0]:
            ax.text(a, top, f" {name}", va="top", fontsize=8)


def plot(samples, phases, path: Path):
    """One panel per series, phases as dotted lines (named on the memory panel); PNG at path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PANELS), 1, figsize=(9, 14), sharex=True)
    for ax, spec in zip(axes, PANELS, strict=True):
        panel(ax, samples, phases, *spec)
    axes[-1].set_xlabel("seconds")
    fig.suptitle(
        "make soak: stores filled, honest-only, then honest + hostile (issues 18 and 34); "
        "shaded: the RSS slope's window",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
