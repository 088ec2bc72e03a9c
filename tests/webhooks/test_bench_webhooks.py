"""`manage.py bench --suite --parts webhooks`, smoke-sized: it runs end to end, every event reaches
the receiver once, and the report has the delivery latency."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.live


def test_the_webhook_bench_part_delivers_every_event_and_reports_latency(tmp_path: Path) -> None:
    printed, report = run_bench(
        tmp_path / "suite.json",
        *("--suite", "--setups", "embedded", "--parts", "webhooks", "--sizes", "1"),
        *("--webhook-rate", "5", "--webhook-seconds", "1"),
        timeout=300,
    )
    assert "webhook delivery, state change -> receiver" in printed
    (setup,) = report["suite"]
    result = setup["webhooks"]
    assert result["calls"] == 5
    assert result["received"] == result["events"] >= 10  # received + expired at least
    assert result["duplicates"] == 0
    assert result["not_delivered"] == 0
    assert result["all"]["p50"] is not None
    assert {"call.received", "call.expired"} <= set(result["by_type"])
