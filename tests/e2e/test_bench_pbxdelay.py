"""`manage.py bench --parts pbxdelay`, smoke-sized: both deployments decide through the TLS
simulator behind the delaying proxy, and the connection opened ahead saves the handshakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import ROOT

pytestmark = pytest.mark.live


def test_bench_pbxdelay_part_measures_decisions_with_and_without_a_warm_connection(
    tmp_path: Path,
) -> None:
    out = tmp_path / "pbxdelay.json"
    delay = 40
    command = [sys.executable, "manage.py", "bench", "--smoke", "--parts", "pbxdelay"]
    done = subprocess.run(
        [*command, "--pbx-delay-ms", str(delay), "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "connection opened ahead: POST -> PBX has it" in done.stdout

    (setup,) = json.loads(out.read_text())["suite"]
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
