"""The page under load (small count; `make loadtest` runs 50 clients x 20 requests)."""

from __future__ import annotations

import json

ROUNDS = 3  # RSS after each; rounds 2 and 3 are each compared with the one before


def test_concurrent_clients_get_offline_answers_and_overload_gets_busy(exported_models, tmp_path):
    from benchmarks import loadtest

    out = tmp_path / "load.json"
    args = ["--models", str(exported_models), "--clients", "8", "--requests", "3"]
    code = loadtest.main([*args, "--rounds", str(ROUNDS), "--burst", "160", "--out", str(out)])
    report = json.loads(out.read_text())
    assert code == 0, report["checks"]
    assert report["load"]["ok"] == 24 * ROUNDS and report["load"]["mismatches"] == 0
    rss = report["rss_mib_per_round"]  # after the warm-up, then after each round
    assert len(rss) == ROUNDS + 1, rss
    assert report["checks"]["RSS flat after the first round (< 20 MiB a round)"], rss
    assert report["overload"]["busy"] > 0 and not report["overload"]["other_errors"]
    assert report["server_alive_after"]
