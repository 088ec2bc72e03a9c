"""`manage.py bench`: push and decision latency over loopback, against real processes.

Why two processes: the bench logs its operators in with Django's own session machinery
(``force_login``), and the server must find those sessions in the database it reads. Django picks
its database from ``DATABASE_URL`` once, when settings load, and swapping ``settings.DATABASES``
afterwards (or adding a second alias and writing sessions through it) is fragile. So this command
only makes a temporary directory, points ``DATABASE_URL`` at a fresh SQLite file in it, and runs
the worker (``python -m screening.devtools.bench``) with that environment: inside the worker the
temporary database is the default database from the first query on, exactly as it is for the server.

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
PG_URL = "postgresql://postgres@127.0.0.1:5432"
SUITE_PARTS = ("push", "memory", "decide", "throughput", "login")
# Run only when asked for by name (--parts): lookups starts three deployments of its own, card
# seeds a million calls first, push_context repeats the push part with full cards, intake times
# the store-before-push step in process with and without the audit chain, webhooks the delivery
# latency of outgoing webhooks (state change -> receiver).
EXTRA_PARTS = ("lookups", "card", "push_context", "intake", "webhooks", "pbxdelay")


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
        suite = parser.add_argument_group(
            "suite", "the full suite (--suite): push vs the raw floor, decide, throughput, memory"
        )
        suite.add_argument(
            "--suite", action="store_true", help="run the full suite instead of the basic bench"
        )
        suite.add_argument(
            "--setups",
            default="embedded,scaleout",
            help="embedded (SQLite, in-memory layer, one serve) and/or scaleout (PostgreSQL at "
            f"{PG_URL}, Redis db 15, two web processes + pbx_listen)",
        )
        suite.add_argument(
            "--sizes", default="1,100,500,1000", help="operator counts for push (1,100,500,1000)"
        )
        suite.add_argument(
            "--parts",
            default=",".join(SUITE_PARTS),
            help=f"which parts ({','.join(SUITE_PARTS)}; also {','.join(EXTRA_PARTS)}: push "
            "latency with external caller lookups off, hanging and answering; card reads at a "
            "million calls; the push with and without the card's context; webhook delivery "
            "latency)",
        )
        suite.add_argument("--push-calls", type=int, default=20, help="calls per size (20)")
        suite.add_argument(
            "--decide-rounds", type=int, default=10, help="measured rounds per concurrency (10)"
        )
        suite.add_argument(
            "--rates", default="5,10,20,30,40,60", help="throughput ramp, calls/s (5,...,60)"
        )
        suite.add_argument(
            "--step-seconds", type=float, default=5.0, help="seconds per throughput step (5)"
        )
        suite.add_argument(
            "--login-rounds", type=int, default=20, help="login: decisions per phase (20)"
        )
        suite.add_argument(
            "--login-flood", type=int, default=40, help="login: concurrent login POSTs (40)"
        )
        suite.add_argument(
            "--lookup-operators", type=int, default=100, help="lookups: operators (100)"
        )
        suite.add_argument(
            "--lookup-delay-ms",
            type=int,
            default=200,
            help="lookups: how long the answering lookup server waits, ms (200; budget 800)",
        )
        suite.add_argument(
            "--card-calls",
            type=int,
            default=1_000_000,
            help="card: calls in the table before reading cards (1000000; seeded if fewer)",
        )
        suite.add_argument(
            "--card-reads", type=int, default=2000, help="card: cards read and timed (2000)"
        )
        suite.add_argument(
            "--context-operators",
            type=int,
            default=100,
            help="push_context: operators connected (100)",
        )
        suite.add_argument(
            "--intake-calls",
            type=int,
            default=1000,
            help="intake: calls with the audit chain, and as many without (1000)",
        )
        suite.add_argument(
            "--webhook-rate", type=float, default=10.0, help="webhooks: calls per second (10)"
        )
        suite.add_argument(
            "--webhook-seconds", type=float, default=60.0, help="webhooks: for how long, s (60)"
        )
        suite.add_argument(
            "--webhook-endpoints",
            type=int,
            default=1,
            help="webhooks: endpoints (1; 0 times the same calls without webhooks)",
        )
        suite.add_argument(
            "--pbx-delay-ms",
            type=float,
            default=40.0,
            help="pbxdelay: network delay added each way between pbxscreen and the PBX, ms (40)",
        )
        suite.add_argument(
            "--smoke", action="store_true", help="a tiny suite (CI): embedded, a few operators"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["suite"] or options["smoke"]:
            self._suite(options)
            return
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

    def _suite(self, options: dict[str, Any]) -> None:
        from screening.devtools.bench import report

        setups = [s.strip() for s in options["setups"].split(",") if s.strip()]
        parts = [p.strip() for p in options["parts"].split(",") if p.strip()]
        allowed = (*SUITE_PARTS, *EXTRA_PARTS)
        if not set(setups) <= {"embedded", "scaleout"} or not set(parts) <= set(allowed):
            raise CommandError(f"--setups: embedded,scaleout; --parts: {','.join(allowed)}")
        if options["lookup_operators"] < 1 or not 0 <= options["lookup_delay_ms"] < 800:
            raise CommandError("--lookup-operators must be >= 1, --lookup-delay-ms 0..799")
        if not 1 <= options["pbx_delay_ms"] <= 1000:
            raise CommandError("--pbx-delay-ms must be between 1 and 1000")
        suite: dict[str, Any] = {
            "sizes": [int(n) for n in options["sizes"].split(",")],
            "parts": parts,
            "push_calls": options["push_calls"],
            "decide_rounds": options["decide_rounds"],
            "rates": [float(r) for r in options["rates"].split(",")],
            "step_seconds": options["step_seconds"],
            "login_rounds": options["login_rounds"],
            "login_flood": options["login_flood"],
            "lookup_operators": options["lookup_operators"],
            "lookup_delay_ms": options["lookup_delay_ms"],
            "log_level": options["server_log_level"],
            "card_calls": options["card_calls"],
            "card_reads": options["card_reads"],
            "context_operators": options["context_operators"],
            "intake_calls": options["intake_calls"],
            "webhook_rate": options["webhook_rate"],
            "webhook_seconds": options["webhook_seconds"],
            "webhook_endpoints": options["webhook_endpoints"],
            "pbx_delay_ms": options["pbx_delay_ms"],
        }
        if options["smoke"]:
            setups = ["embedded"]
            suite.update(
                sizes=[1, 3],
                push_calls=2,
                decide_rounds=1,
                decide_operators=3,
                decide_concurrency=[1, 2],
                idle_seconds=0.3,
                settle_seconds=0.0,
                throughput_operators=3,
                rates=[2.0],
                step_seconds=1.0,
                login_rounds=1,
                login_flood=4,
                lookup_operators=3,
            )
        stamp = time.strftime("%Y-%m-%d-%H%M%S")
        json_path = options["json"] or Path(settings.BASE_DIR) / "bench-results" / (
            f"suite-{stamp}.json"
        )
        results = []
        for setup in setups:
            results.append(self._suite_setup(setup, suite, options))
        combined = {"suite": results, "command": " ".join(sys.argv)}
        self.stdout.write(report.format_suite(combined))
        report.write_json(json_path, combined)
        self.stdout.write(f"\nbench: results written to {json_path}")

    def _suite_setup(
        self, setup: str, suite: dict[str, Any], options: dict[str, Any]
    ) -> dict[str, Any]:
        workdir = Path(tempfile.mkdtemp(prefix=f"pbxscreen-suite-{setup}-"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("REDIS_URL", None)
        database = f"pbxscreen_bench_{os.getpid()}"
        if setup == "scaleout":
            _postgres(f"CREATE DATABASE {database}")
            env["DATABASE_URL"] = f"{PG_URL}/{database}"
        else:
            env["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
        worker_options = {
            "mode": "suite",
            "suite": {**suite, "setup": setup},
            "json": str(workdir / "result.json"),
            "workdir": str(workdir),
        }
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            returncode = self._run_worker(env, worker_options)
            if returncode != 0:
                raise CommandError(f"the {setup} suite worker failed (exit status {returncode})")
            return json.loads((workdir / "result.json").read_text())
        except KeyboardInterrupt:
            raise CommandError("interrupted", returncode=130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
            if setup == "scaleout":
                _postgres(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            if options["keep_tmp"]:
                self.stderr.write(f"kept {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)

    def _run_worker(self, env: dict[str, str], worker_options: dict[str, Any]) -> int:
        worker = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "screening.devtools.bench", json.dumps(worker_options)],
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


def _postgres(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_URL}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)  # type: ignore[arg-type]  # our own fixed statement
