"""`manage.py bench --parts pbxdelay`, smoke-sized: both deployments decide through the TLS
simulator behind the delaying proxy, and the connection opened ahead saves the handshakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.live


def test_bench_pbxdelay_part_measures_decisions_with_and_without_a_warm_connection(
    tmp_path: Path,
) -> None:
    delay = 40
    printed, report = run_bench(
        tmp_path / "pbxdelay.json", "--smoke", "--parts", "pbxdelay", "--pbx-delay-ms", str(delay)
    )
    assert "connection opened ahead: POST -> PBX has it" in printed

    (setup,) = report["suite"]
    result = setup["pbxdelay"]
    off, on = result["off"]["post_to_pbx_accept"], result["on"]["post_to_pbx_accept"]
    assert (off["count"], result["off"]["errors"]) == (1, 0), result["off"]
    assert (on["count"], result["on"]["errors"]) == (1, 0), result["on"]
    # The request crosses the delay at least once; without a warm connection also the TCP and
    # TLS handshakes (two round trips more, less whatever noise the shared machine adds).
    assert on["min"] >= delay, on
    assert off["min"] >= 5 * delay, off
    assert on["p50"] < off["p50"] - 2 * delay, (on, off)
    assert result["off"]["decisions_on_a_new_connection"] == 1
    assert result["on"]["decisions_on_a_new_connection"] == 0
