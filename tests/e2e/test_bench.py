"""`manage.py bench`, smoke-sized: it runs end to end and writes the result file it promises."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.live

RESULT_KEYS = {
    "push",
    "push_from_inject",
    "inject_http",
    "sim_send_after_inject_start",
    "decide_http",
    "decide_pbx_round_trip",
    "decide_others_seen",
    "decide_all_others_seen",
}
SUMMARY_KEYS = {"count", "lost", "min", "mean", "p50", "p90", "p99", "max"}


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_bench_smoke_run_writes_its_json(tmp_path: Path) -> None:
    args = ["--operators", "2", "--calls", "3", "--gap", "0.2"]
    printed, report = run_bench(tmp_path / "bench.json", *args, timeout=60)
    assert "push: simulator send -> operator screen" in printed

    assert {"machine", "config", "notes", "results", "errors", "calls"} <= report.keys()
    assert report["machine"]["cpu_count"] >= 1
    assert report["config"]["operators"] == 2
    results = report["results"]
    assert results.keys() == RESULT_KEYS
    for name, summary in results.items():
        assert summary.keys() == SUMMARY_KEYS, name
        assert summary["lost"] == 0, (name, summary)
        assert summary["count"] > 0, (name, summary)
        assert summary["min"] > 0, (name, summary)
    assert results["push"]["count"] == 3 * 2  # every call reached both operators
    assert results["decide_http"]["count"] == 3
    assert results["decide_others_seen"]["count"] == 3  # one other operator per decision
    assert report["errors"]["decide_failures"] == 0
    assert report["errors"]["seq_gaps"] == 0
    measured = [c for c in report["calls"] if not c["warmup"]]
    assert len(measured) == 3
    assert all(c["decided_status"] == "accepted" for c in measured)


def test_bench_suite_smoke_run_writes_its_json(tmp_path: Path) -> None:
    """`bench --smoke`: every part of the suite runs end to end (embedded, a few operators)."""
    printed, report = run_bench(tmp_path / "suite.json", "--smoke", timeout=180)
    assert "floor (raw websockets)" in printed
    assert "fd limit used" in printed

    (setup,) = report["suite"]
    assert setup["setup"] == "embedded"
    assert {
        "push",
        "decide",
        "throughput",
        "login",
        "memory",
        "machine",
        "fd_limit",
    } <= setup.keys()
    for n, row in setup["push"].items():
        assert row["product"]["count"] == 2 * int(n), row  # every call reached every operator
        assert row["product"]["lost"] == row["floor"]["lost"] == 0, row
        assert row["floor"]["count"] == 2 * int(n), row
        assert row["ratio_p99"] is not None
    for row in setup["decide"].values():
        assert row["errors"] == 0
        assert row["server_share"]["count"] > 0
        assert row["post_to_pbx_accept"]["count"] > 0
        assert row["post_to_others_see_outcome"]["lost"] == 0
        # The same rounds on the decision floor, and every figure as a ratio to it.
        floor = row["floor"]
        assert floor["errors"] == 0, floor
        assert floor["post_to_others_see_outcome"]["lost"] == 0, floor
        for key in ("post_round_trip", "post_to_pbx_accept", "post_to_others_see_outcome"):
            assert floor[key]["count"] == row[key]["count"], (key, floor[key], row[key])
            for p in ("p50", "p99"):
                assert _positive(row["ratios"][key][p]), (key, p, row["ratios"])
        # CPU per decided call: the server's, split by stage, what no stage accounts for.
        figures = row["cpu"]
        assert figures["decisions"] == row["decided"] > 0
        assert _positive(figures["server_per_call_ms"]), figures
        assert figures["processes"]["web-1"]["role"] == "server"
        stages = figures["stages_per_call_ms"]
        assert {"request", "claim", "pbx", "finish", "push", "intake"} <= stages.keys(), stages
        assert all(_positive(v) for v in stages.values()), stages
        assert sum(stages.values()) <= figures["server_per_call_ms"] + 10 * 1000 / os.sysconf(
            "SC_CLK_TCK"
        )  # the stages fit in the process's CPU, give or take /proc's tick
        assert math.isfinite(figures["unaccounted_per_call_ms"])
        assert floor["cpu"]["processes"]["decide-floor"]["role"] == "floor"
    assert "CPU per decided call" in printed
    assert set(setup["cpu_stage_overhead_us"]) == {"sync_entry_us", "async_call_us"}
    assert all(_positive(v) for v in setup["cpu_stage_overhead_us"].values())
    assert setup["throughput"]["steps"]
    phases = setup["login"]["phases"]
    assert list(phases) == [
        "quiet",
        "flood, one address",
        "flood, many addresses",
        "control: page views",
    ]
    for phase, row in phases.items():
        assert row["decide_errors"] == 0, phase  # decisions go on during the flood
        assert row["decide_round_trip"]["count"] == 1, phase
        assert set(row["flood"]["statuses"]) <= {"200", "429", "503"}, (phase, row)
    assert sum(phases["flood, many addresses"]["flood"]["statuses"].values()) > 0
    assert setup["memory"]["rss_connected_kb"] > 0
