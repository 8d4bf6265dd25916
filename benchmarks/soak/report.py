"""The soak's figures from its samples and phases: RSS slope, log bytes a minute, temp dir, fds;
the checks (issue 34's acceptance) and the JSON report."""

from __future__ import annotations

import numpy as np

from flaxdigits.serve.page import budgets

LOG_LINE = budgets.LOG_CHARS + 40  # a cut log line: the limit plus the "... [N more]" note
# What the caps let into the log in a minute: capped records and stderr lines, each cut to
# LOG_LINE, plus the first line of a minute that counts what the last one dropped (each cap).
LOG_BYTES_PER_MINUTE = (budgets.LOG_RECORDS_PER_MINUTE + budgets.STDERR_LINES_PER_MINUTE + 2) * (
    LOG_LINE + 60
)


def log_bytes_per_minute(samples) -> int:
    """The most bytes the server's log grew by in any 60 s of these samples."""
    most = 0
    for i, first in enumerate(samples):
        later = [s for s in samples[i:] if s["t"] - first["t"] <= 60]
        most = max(most, later[-1]["log_bytes"] - first["log_bytes"])
    return most


def measured_window(samples, skip_fraction=0.2) -> list[dict]:
    """The samples the RSS slope is fitted to: the mixed phase's, after its first skip_fraction
    (the worker threads and malloc's arenas meeting the hostile requests' sizes)."""
    if len(samples) < 4:
        return []
    start = samples[int(len(samples) * skip_fraction)]["requests"]
    return [s for s in samples if s["requests"] >= start]


def slope_per_1000(window, key: str = "rss_mib"):
    """Least-squares slope of a sample's figure (RSS by default; or one of the server's probe,
    as malloc's) per 1,000 requests over these samples, in its unit (MiB; blocks for
    python_blocks); None: too few, or not probed."""
    pts = [(s["requests"], v) for s in window if (v := figure(s, key)) is not None]
    if len(pts) < 2:
        return None
    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1] for p in pts], float)
    if np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0] * 1000)


# The probe's memory figures, per sample: what malloc holds in use, freed and kept, and mapped
# apart; the blocks Python has allocated (its objects, those in pymalloc's own arenas too).
MEMORY = ("malloc_in_use_mib", "malloc_free_mib", "malloc_mmap_mib", "python_blocks")


def figure(sample: dict, key: str):
    """A sample's own figure, or its probe's (None: neither has it)."""
    return sample[key] if key in sample else sample.get("stores", {}).get(key)


def checks(figures: dict, baseline: dict, mixed: dict, alive: bool, log_lines, fill) -> dict:
    """What the soak promises, each true or false."""
    slope, p95 = figures["slope"], mixed["latency_p95_s"]
    return {
        "bounded stores full before the measured window": bool(fill and fill["full"]),
        "rss slope < 1 MiB / 1,000 requests": slope is not None and slope < 1.0,
        "temp dir within budget": figures["temp_peak"] <= budgets.TEMP_DIR_BYTES,
        "temp dir files within budget": figures["files_peak"] <= budgets.TEMP_DIR_FILES,
        "log bytes a minute within the caps": figures["log_minute"] <= LOG_BYTES_PER_MINUTE,
        "no wrong honest answers": baseline["wrong_answers"] == 0 and mixed["wrong_answers"] == 0,
        "no honest errors": baseline["honest_error_count"] == 0
        and mixed["honest_error_count"] == 0,
        "honest p95 within 2x of honest-only": p95 is not None
        and p95 <= 2 * baseline["latency_p95_s"],
        "server alive": alive,
        "server log lines within the cut": all(len(line) <= LOG_LINE for line in log_lines),
    }


def figures_of(samples, mixed_start: float) -> dict:
    """The RSS slope over the measured window, the mixed phase's log rate, the whole run's
    temp-dir peaks."""
    mixed_samples = [s for s in samples if s["t"] >= mixed_start]
    window = measured_window(mixed_samples)
    return {
        "window": window_of(window),
        "slope": slope_per_1000(window),
        "memory_slopes": {key: slope_per_1000(window, key) for key in MEMORY},
        "temp_peak": max(s["temp_bytes"] for s in samples),
        "files_peak": max(s["temp_files"] for s in samples),
        "log_minute": log_bytes_per_minute(mixed_samples),
    }


def window_of(window) -> dict | None:
    """Where the measured window starts and ends: requests, RSS, and the stores' sizes."""
    if not window:
        return None
    first, last = window[0], window[-1]
    return {
        "t": [first["t"], last["t"]],
        "requests": [first["requests"], last["requests"]],
        "rss_mib": [first["rss_mib"], last["rss_mib"]],
        "stores": [first.get("stores"), last.get("stores")],
    }


def build_report(requests, phases, samples, figures, log, log_lines, checked) -> dict:
    """The JSON report: phases, RSS, fds, temp dir, server log, stores, checks, samples."""
    baseline, mixed = phases
    return {
        "requests": requests,
        "phases": {"honest_only": baseline, "mixed": mixed},
        "rss_mib": {
            "start": samples[0]["rss_mib"],
            "end": samples[-1]["rss_mib"],
            "peak": max(s["rss_mib"] for s in samples),
            "slope_after_warmup_per_1000_requests": figures["slope"],
            "measured_window": figures["window"],
            "memory_slopes_per_1000_requests": figures["memory_slopes"],
        },
        "fds": {
            "start": samples[0]["fds"],
            "peak": max(s["fds"] for s in samples),
            "end": samples[-1]["fds"],
        },
        "temp_dir_bytes": {
            "peak": figures["temp_peak"],
            "end": samples[-1]["temp_bytes"],
            "budget": budgets.TEMP_DIR_BYTES,
        },
        "temp_dir_files": {
            "peak": figures["files_peak"],
            "end": samples[-1]["temp_files"],
            "budget": budgets.TEMP_DIR_FILES,
        },
        "server_log": {
            "most_bytes_in_a_minute_under_the_flood": figures["log_minute"],
            "cap_bytes_a_minute": LOG_BYTES_PER_MINUTE,
            "bytes": log.stat().st_size,
            "lines": len(log_lines),
            "longest_line": max((len(line) for line in log_lines), default=0),
            "tail": [line[:300] for line in log_lines[-5:]],
        },
        "stores": {
            "start": next((s["stores"] for s in samples if "stores" in s), None),
            "end": next((s["stores"] for s in reversed(samples) if "stores" in s), None),
        },
        "checks": checked,
        "samples": samples,
    }
