"""The bench worker, ``python -m screening.devtools.bench '<options as JSON>'``, run by
`manage.py bench`.

It runs with ``DATABASE_URL`` already pointing at the throw-away database, so Django here and the
server process it starts share that database from the first query on (see the command's docstring
for why this is a separate process).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(options: dict[str, Any]) -> dict[str, Any]:
    from django.conf import settings

    from screening.devtools.bench import harness, report
    from screening.devtools.bench.scenario import Config, Scenario
    from screening.simulator import SimulatorThread

    config = Config(
        operators=options["operators"],
        calls=options["calls"],
        gap=options["gap"],
        concurrent_deciders=options["concurrent_deciders"],
        warmup=options["warmup"],
    )
    workdir = Path(options["workdir"])
    started = time.time()
    machine = harness.machine_info()  # before we add load of our own
    print(f"bench: migrating a fresh SQLite database in {workdir}", flush=True)
    sessions = harness.prepare_database(config.operators)
    server_env = {"DEBUG": "false", "LOG_LEVEL": options["log_level"]}
    if options["redis"]:
        harness.flush_redis(harness.REDIS_BENCH_URL)
        server_env["REDIS_URL"] = harness.REDIS_BENCH_URL

    sim = SimulatorThread(call_rate=0.0).start()
    server: harness.ServerProcess | None = None
    try:
        server_env.update(
            PBX_BASE_URL=sim.base_url,
            PBX_CLIENT_ID=sim.client_id,
            PBX_CLIENT_SECRET=sim.client_secret,
            PBX_EVENTS="websocket",
        )
        server = harness.ServerProcess.start(workdir, server_env)
        print(
            f"bench: server {server.url} (pid {server.process.pid}), simulator {sim.base_url}; "
            f"{config.calls} calls + {config.warmup} warm-up to {config.operators} operators",
            flush=True,
        )
        # The simulator answers the server from this process: collect and freeze what setup
        # (Django, migrations) left behind, so a full collection of it does not stall the
        # simulator in the middle of the measurements.
        gc.collect()
        gc.freeze()
        measured = asyncio.run(Scenario(config, server.url, sim.base_url, sessions).run())
    except Exception:
        if server is not None:
            print(f"bench: server log tail:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        if server is not None:
            server.stop()
        sim.stop()

    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 3),
        "machine": machine,
        "config": {
            **asdict(config),
            "redis": options["redis"],
            "channel_layer": "redis" if options["redis"] else "in-memory",
            "server_log_level": options["log_level"],
            "window_seconds": settings.SCREEN_WINDOW_SECONDS,
        },
        "notes": list(report.NOTES),
        **measured,
    }
    print(report.format_table(result), flush=True)
    path = Path(options["json"])
    report.write_json(path, result)
    print(f"\nbench: results written to {path}", flush=True)
    return result


def run_suite(options: dict[str, Any]) -> dict[str, Any]:
    from screening.devtools.bench import report, suite

    result = suite.run(options)
    report.write_json(Path(options["json"]), result)
    return result


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # let the cleanup below run on SIGTERM too
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pbxscreen.settings")
    import django

    django.setup()
    try:
        options = json.loads(argv[1])
        if options.get("mode") == "suite":
            run_suite(options)
        else:
            run(options)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
