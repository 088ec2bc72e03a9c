"""`manage.py bench --parts lookups`, smoke-sized: the three deployments run and the late-name
measurement sees names arrive (never before the lookup server's own delay)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.live


def test_bench_lookups_part_measures_push_and_the_late_name(tmp_path: Path) -> None:
    printed, report = run_bench(tmp_path / "lookups.json", "--smoke", "--parts", "lookups")
    assert "first push, server hangs" in printed

    (setup,) = report["suite"]
    lookups = setup["lookups"]
    operators, calls = lookups["operators"], lookups["calls"]
    for variant in ("off", "hang", "answer"):
        push = lookups[variant]["push"]
        assert (push["count"], push["lost"]) == (operators * calls, 0), (variant, push)
    named = lookups["answer"]["name_after_push"]
    assert (named["count"], named["lost"]) == (operators * calls, 0), named
    # The name comes from a server that waits before answering: never sooner than that after
    # the PBX sent the call (after the operator's own first push it may be, by that push's lag).
    after_send = lookups["answer"]["name_after_send"]
    assert after_send["count"] == named["count"]
    assert after_send["min"] >= lookups["answer_delay_ms"], after_send
    assert "name_after_push" not in lookups["hang"]
