"""`manage.py bench` run as its own process, the way an engineer runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.live import ROOT


def run_bench(out: Path, *args: str, timeout: float = 240) -> tuple[str, dict[str, Any]]:
    """``manage.py bench ARGS --json OUT``: it must exit 0; returns what it printed and the JSON
    it wrote."""
    done = subprocess.run(
        [sys.executable, "manage.py", "bench", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, json.loads(out.read_text())
