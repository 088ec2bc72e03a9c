"""A child process with its output in a log file: the one helper behind the test live servers, the
scale-out cluster, the bench and the soak.

No Django import here: the soak and the tests start children before (or without) touching settings.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]  # where manage.py is (settings.BASE_DIR)
LOG_TAIL_CHARS = 4000


@dataclass
class ChildProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, name: str, cmd: list[str], *, env: dict[str, str], log_path: Path, cwd: Path = BASE_DIR
    ) -> ChildProcess:
        """Run ``cmd`` with ``env`` on top of this process's environment; stdout and stderr both go
        to ``log_path`` so the order of tracebacks and log lines survives."""
        with log_path.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter, manage.py or binaries
                cmd,
                cwd=cwd,
                # Unbuffered, or a crashed child's last lines never reach the log.
                env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(name, process, log_path)

    def alive(self) -> bool:
        return self.process.poll() is None

    def check(self) -> None:
        """Raise with the log tail if the process has exited (it is meant to run until stopped)."""
        if not self.alive():
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n{self.tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.alive():
            self.process.terminate()
            self.wait_or_kill(timeout)

    def wait_or_kill(self, timeout: float = 10.0) -> None:
        """After a terminate(): split out so many children can be signalled first, then reaped."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, like a crash: nothing in the child gets to clean up."""
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        # Used in error paths, so a missing log must not hide the original error.
        with contextlib.suppress(OSError):
            return self.log()[-chars:]
        return "(no log)"

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def start_manage(
    name: str, args: list[str], *, env: dict[str, str], log_dir: Path, cwd: Path = BASE_DIR
) -> ChildProcess:
    """``python manage.py *args`` with the log in ``log_dir/<name>.log``."""
    return ChildProcess.start(
        name,
        [sys.executable, "manage.py", *args],
        env=env,
        log_path=log_dir / f"{name}.log",
        cwd=cwd,
    )
