"""The soak's arithmetic (benchmarks/soak/report.py, fill.py): which samples the RSS slope is
fitted to, the slope of a probed figure, when the bounded stores count as full. No server."""

from __future__ import annotations

import pytest

from benchmarks.soak.fill import address, full
from benchmarks.soak.report import figures_of, measured_window, slope_per_1000


def samples(n=50, rss=lambda i: 300.0, in_use=lambda i: 80.0):
    return [
        {
            "t": float(i),
            "requests": 100 * i,
            "rss_mib": rss(i),
            "temp_bytes": 0,
            "temp_files": 0,
            "log_bytes": 0,
            "stores": {"malloc_in_use_mib": in_use(i)},
        }
        for i in range(n)
    ]


def test_the_slope_is_fitted_after_the_first_fifth_of_the_mixed_phase():
    # RSS climbs for the first 10 samples (a store filling), then stays: the window skips it
    run = samples(rss=lambda i: 200.0 + 10 * min(i, 10))
    window = measured_window(run)
    assert window[0]["requests"] == 1000
    assert slope_per_1000(window) == pytest.approx(0.0, abs=1e-9)
    assert slope_per_1000(run) > 1.0  # the whole run counts the climb


def test_the_slope_of_a_probed_figure_is_in_mib_per_1000_requests():
    run = samples(in_use=lambda i: 80.0 + 0.25 * i)  # 0.25 MiB per 100 requests
    assert slope_per_1000(run, "malloc_in_use_mib") == pytest.approx(2.5)
    assert slope_per_1000([{"requests": 1, "rss_mib": 1.0}]) is None
    assert slope_per_1000(samples(), "not_probed") is None


def test_figures_start_at_the_mixed_phase():
    run = samples(rss=lambda i: 200.0 if i < 25 else 300.0 + i)
    figures = figures_of(run, mixed_start=25.0)
    assert figures["window"]["requests"][0] >= 2500
    assert figures["slope"] == pytest.approx(10.0)
    assert figures["memory_slopes"]["malloc_in_use_mib"] == pytest.approx(0.0, abs=1e-9)


def test_stores_are_full_at_their_bounds_and_unknown_ones_are_not_waited_for():
    bounds = {"sessions": 500, "pending_sessions": 2000, "rate_buckets": None}
    names = ["sessions", "pending_sessions", "rate_buckets"]
    assert full(
        {"sessions": 500, "pending_sessions": 2000, "rate_buckets": 7, "bounds": bounds}, names
    )
    assert not full({"sessions": 499, "pending_sessions": 2000, "bounds": bounds}, names)
    assert not full(None, names)
    assert not full({"sessions": 500}, names)


def test_fill_addresses_are_distinct_and_apart_from_the_clients():
    seen = {address(i) for i in range(70_000)}
    assert len(seen) == 70_000
    assert all(a.startswith("100.") and 64 <= int(a.split(".")[1]) < 128 for a in seen)
