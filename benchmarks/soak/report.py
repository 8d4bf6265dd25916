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


def slope_per_1000(samples, skip_fraction=0.2):
    """Least-squares RSS slope in MiB per 1,000 requests, after the first skip_fraction."""
    if len(samples) < 4:
        return None
    start = samples[int(len(samples) * skip_fraction)]["requests"]
    pts = [(s["requests"], s["rss_mib"]) for s in samples if s["requests"] >= start]
    x = np.array([p[0] for p in pts], float)
    y = np.array([p[1] for p in pts], float)
    if np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0] * 1000)


def checks(figures: dict, baseline: dict, mixed: dict, alive: bool, log_lines) -> dict:
    """What the soak promises, each true or false."""
    slope, p95 = figures["slope"], mixed["latency_p95_s"]
    return {
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
    """The measured window's RSS slope and log rate; the whole run's temp-dir peaks."""
    mixed_samples = [s for s in samples if s["t"] >= mixed_start]
    return {
        "slope": slope_per_1000(mixed_samples),
        "temp_peak": max(s["temp_bytes"] for s in samples),
        "files_peak": max(s["temp_files"] for s in samples),
        "log_minute": log_bytes_per_minute(mixed_samples),
    }


def build_report(requests, phases, samples, figures, log, log_lines, checked) -> dict:
    """The JSON report: phases, RSS, fds, temp dir, server log, checks, samples."""
    baseline, mixed = phases
    return {
        "requests": requests,
        "phases": {"honest_only": baseline, "mixed": mixed},
        "rss_mib": {
            "start": samples[0]["rss_mib"],
            "end": samples[-1]["rss_mib"],
            "peak": max(s["rss_mib"] for s in samples),
            "slope_after_warmup_per_1000_requests": figures["slope"],
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
        "checks": checked,
        "samples": samples,
    }
