"""`manage.py bench`: push and decision latency over loopback, against real processes.

Why two processes: the bench logs its operators in with Django's own session machinery
(``force_login``), and the server must find those sessions in the database it reads. Django picks
its database from ``DATABASE_URL`` once, when settings load, and swapping ``settings.DATABASES``
afterwards (or adding a second alias and writing sessions through it) is fragile. So this command
only makes a temporary directory, points ``DATABASE_URL`` at a fresh SQLite file in it, and runs
the worker (``python -m screening.bench``) with that environment: inside the worker the temporary
database is the default database from the first query on, exactly as it is for the server.

Process tree: this command -> worker (own session and process group) -> PBX simulator thread and
``manage.py serve``. Ctrl-C (or SIGTERM) reaches the worker as SIGTERM, and the worker stops the
server and the simulator; whatever is still left in the worker's process group afterwards is
killed, and the temporary directory is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

WORKER_GRACE_S = 30.0


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Measure push latency (PBX event -> operator screen) and decision round trips against "
        "a real server process and the PBX simulator on loopback."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--operators", type=int, default=5, help="operator WebSockets (5)")
        parser.add_argument("--calls", type=int, default=30, help="measured calls (30)")
        parser.add_argument("--gap", type=float, default=0.3, help="pause between calls, s (0.3)")
        parser.add_argument(
            "--concurrent-deciders",
            type=int,
            default=1,
            help="K operators decide K calls at the same moment (1; at most --operators)",
        )
        parser.add_argument(
            "--warmup", type=int, default=1, help="unmeasured calls first (1): first-use costs"
        )
        parser.add_argument(
            "--redis",
            action="store_true",
            help="run the server on the Redis layer and cache (redis://127.0.0.1:6379/15, "
            "flushed first)",
        )
        parser.add_argument(
            "--json", type=Path, help="result file (bench-results/bench-<timestamp>.json)"
        )
        parser.add_argument(
            "--server-log-level",
            default="INFO",
            help="LOG_LEVEL of the measured server (INFO, as in production)",
        )
        parser.add_argument(
            "--keep-tmp", action="store_true", help="keep the temporary database and server log"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        operators, calls = options["operators"], options["calls"]
        deciders = options["concurrent_deciders"]
        if operators < 1 or calls < 1 or options["warmup"] < 0 or options["gap"] < 0:
            raise CommandError("--operators and --calls must be >= 1, --warmup and --gap >= 0")
        if operators < 2:
            self.stderr.write("with one operator there is nobody else to see a decision")
        if not 1 <= deciders <= operators:
            raise CommandError("--concurrent-deciders must be between 1 and --operators")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        json_path = options["json"] or Path(settings.BASE_DIR) / "bench-results" / (
            f"bench-{stamp}.json"
        )
        workdir = Path(tempfile.mkdtemp(prefix="pbxscreen-bench-"))
        worker_options = {
            "operators": operators,
            "calls": calls,
            "gap": options["gap"],
            "concurrent_deciders": deciders,
            "warmup": options["warmup"],
            "redis": options["redis"],
            "log_level": options["server_log_level"],
            "json": str(json_path.resolve()),
            "workdir": str(workdir),
        }
        env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("REDIS_URL", None)  # the worker itself needs only the database
        previous = signal.signal(signal.SIGTERM, _interrupt)  # clean up on SIGTERM as on Ctrl-C
        try:
            returncode = self._run_worker(env, worker_options)
        except KeyboardInterrupt:
            raise CommandError("interrupted", returncode=130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
            if options["keep_tmp"]:
                self.stderr.write(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        if returncode == 130:
            raise CommandError("interrupted", returncode=130)
        if returncode != 0:
            raise CommandError(f"the bench worker failed (exit status {returncode})")

    def _run_worker(self, env: dict[str, str], worker_options: dict[str, Any]) -> int:
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "screening.bench", json.dumps(worker_options)],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group: the server joins it, see _reap
        )
        try:
            assert worker.stdout is not None
            for line in worker.stdout:
                self.stdout.write(line, ending="")
            return worker.wait()
        except KeyboardInterrupt:
            self.stderr.write("interrupted: stopping the server and the simulator")
            worker.send_signal(signal.SIGTERM)  # its handler cleans up; SIGINT may be ignored
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.wait(timeout=WORKER_GRACE_S)
            raise
        finally:
            self._reap(worker)

    @staticmethod
    def _reap(worker: subprocess.Popen[str]) -> None:
        """Kill the worker if it is still running, and anything it left in its process group
        (a server whose worker died without cleaning up)."""
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signal.SIGKILL)
