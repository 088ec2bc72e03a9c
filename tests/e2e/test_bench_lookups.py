"""`manage.py bench --parts lookups`, smoke-sized: the three deployments run and the late-name
measurement sees names arrive (never before the lookup server's own delay)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import ROOT

pytestmark = pytest.mark.live


def test_bench_lookups_part_measures_push_and_the_late_name(tmp_path: Path) -> None:
    out = tmp_path / "lookups.json"
    done = subprocess.run(
        [sys.executable, "manage.py", "bench", "--smoke", "--parts", "lookups", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "first push, server hangs" in done.stdout

    (setup,) = json.loads(out.read_text())["suite"]
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
