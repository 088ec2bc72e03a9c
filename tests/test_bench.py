"""`manage.py bench`, smoke-sized: it runs end to end and writes the result file it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.live import ROOT

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


def test_bench_smoke_run_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--operators", "2", "--calls", "3", "--gap", "0.2", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "manage.py", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "push: simulator send -> operator screen" in done.stdout

    report = json.loads(out.read_text())
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
