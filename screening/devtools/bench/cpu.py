"""CPU per decided call (the suite's decide part): every process's CPU from ``/proc``, and the
server processes' split by stage from their ``pbxscreen_stage_cpu_seconds_total`` (screening.
cpu_stages), read before and after a burst of decisions and divided by the decisions made.

Processes, by role: ``server`` (the web processes and ``pbx_listen``: what the product costs),
``simulator`` (the PBX), ``floor`` (the decision floor), ``database`` (PostgreSQL backends of the
bench database alive at the window's end; one that closed inside it is lost, and counted in
``database_backends_missed``) and ``redis`` (the server process, shared with
whatever else uses it on this machine). A process's CPU is utime + stime of all its threads.

Reading order keeps the scrape's own cost out of the window: before a burst the stages are
scraped first and ``/proc`` read second; after it, ``/proc`` first and the stages second.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from screening.devtools.bench.decide_floor import APP_NAME as FLOOR_APP

TICKS = os.sysconf("SC_CLK_TCK")
STAGE_LINE = re.compile(
    r'^pbxscreen_stage_cpu_seconds_total\{stage="([^"]+)"\} ([0-9.eE+-]+)$', re.MULTILINE
)


def proc_cpu_seconds(pid: int, thread: int | None = None) -> float | None:
    """utime + stime of ``pid`` (all its threads, or only ``thread``), or None when it is gone
    or unreadable."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        with open(path, "rb") as stat:
            text = stat.read().decode()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return (int(fields[11]) + int(fields[12])) / TICKS


def scrape_stages(url: str) -> dict[str, float]:
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    return {m[1]: float(m[2]) for m in STAGE_LINE.finditer(response.text)}


@dataclass
class Target:
    name: str
    role: str
    pid: int
    metrics_url: str | None = None


@dataclass
class Snapshot:
    at: float
    cpu: dict[str, float | None]
    roles: dict[str, str]
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    # the server processes' main thread: the event loop (Daphne's reactor, pbx_listen's loop)
    loop: dict[str, float | None] = field(default_factory=dict)


class Meter:
    """Snapshots of a fixed set of processes; ``database_pids`` (optional) lists the PostgreSQL
    backends as ``(name, role, pid)`` at snapshot time."""

    def __init__(self, targets: list[Target], database_pids: Any = None) -> None:
        self.targets = targets
        self.database_pids = database_pids

    def _all(self) -> list[Target]:
        backends = self.database_pids() if self.database_pids else []
        return [*self.targets, *(Target(name, role, pid) for name, role, pid in backends)]

    def _read_stages(self) -> dict[str, dict[str, float]]:
        return {t.name: scrape_stages(t.metrics_url) for t in self.targets if t.metrics_url}

    def before(self) -> Snapshot:
        stages = self._read_stages()
        targets = self._all()
        cpu = {t.name: proc_cpu_seconds(t.pid) for t in targets}
        loop = {t.name: proc_cpu_seconds(t.pid, t.pid) for t in targets if t.role == "server"}
        return Snapshot(time.monotonic(), cpu, {t.name: t.role for t in targets}, stages, loop)

    def after(self) -> Snapshot:
        targets = self._all()
        at = time.monotonic()
        cpu = {t.name: proc_cpu_seconds(t.pid) for t in targets}
        loop = {t.name: proc_cpu_seconds(t.pid, t.pid) for t in targets if t.role == "server"}
        roles = {t.name: t.role for t in targets}
        return Snapshot(at, cpu, roles, self._read_stages(), loop)

    async def abefore(self) -> Snapshot:
        return await asyncio.to_thread(self.before)

    async def aafter(self) -> Snapshot:
        return await asyncio.to_thread(self.after)


def per_call(
    before: Snapshot,
    after: Snapshot,
    decisions: int,
    idle: dict[str, float] | None = None,
) -> dict[str, Any]:
    """CPU milliseconds per decided call: per process, the server processes' total, per stage
    (summed over the server processes, and per process), and the server CPU no stage accounts
    for. ``idle``: each process's CPU seconds per second at rest, for the ``net`` figures."""
    seconds = after.at - before.at
    roles = {**before.roles, **after.roles}
    out: dict[str, Any] = {"decisions": decisions, "seconds": round(seconds, 3), "processes": {}}
    if decisions <= 0:
        return out
    server_total = server_net = database = 0.0
    ended = 0
    for name in {**before.cpu, **after.cpu}:
        start, end = before.cpu.get(name), after.cpu.get(name)
        if start is None and end is not None and roles.get(name) == "database":
            start = 0.0  # a backend opened inside the window: all its CPU is the window's
        if start is None or end is None:
            ended += roles.get(name) == "database"  # closed inside the window: lost
            continue
        used = end - start
        at_rest = (idle or {}).get(name, 0.0) * seconds
        row = {
            "role": roles.get(name, "?"),
            "cpu_s": round(used, 3),
            "per_call_ms": round(used * 1000 / decisions, 3),
            "net_per_call_ms": round(max(0.0, used - at_rest) * 1000 / decisions, 3),
        }
        loop_start, loop_end = before.loop.get(name), after.loop.get(name)
        if loop_start is not None and loop_end is not None:
            row["loop_thread_per_call_ms"] = round((loop_end - loop_start) * 1000 / decisions, 3)
        out["processes"][name] = row
        if row["role"] == "server":
            server_total += used
            server_net += max(0.0, used - at_rest)
        elif row["role"] == "database":
            database += used
    _fold_backends(out["processes"])
    # PostgreSQL backends that closed inside the window (their CPU is gone from /proc)
    out["database_backends_missed"] = ended
    stages: dict[str, float] = {}
    by_process: dict[str, dict[str, float]] = {}
    for name, end_stages in after.stages.items():
        start_stages = before.stages.get(name, {})
        mine = {s: v - start_stages.get(s, 0.0) for s, v in end_stages.items()}
        by_process[name] = {s: round(v * 1000 / decisions, 3) for s, v in mine.items() if v > 0}
        for s, v in mine.items():
            stages[s] = stages.get(s, 0.0) + v
    accounted = sum(stages.values())
    out["server_per_call_ms"] = round(server_total * 1000 / decisions, 3)
    out["server_net_per_call_ms"] = round(server_net * 1000 / decisions, 3)
    # The product's own database work too (PostgreSQL backends; SQLite runs inside the server).
    out["with_database_per_call_ms"] = round((server_total + database) * 1000 / decisions, 3)
    out["stages_per_call_ms"] = {
        s: round(v * 1000 / decisions, 3)
        for s, v in sorted(stages.items(), key=lambda kv: -kv[1])
        if v > 0
    }
    out["stages_by_process_ms"] = by_process
    out["unaccounted_per_call_ms"] = round((server_total - accounted) * 1000 / decisions, 3)
    # Idle work (heartbeats, timers, the collector) is in no stage: net of it, what is left.
    out["unaccounted_net_per_call_ms"] = round((server_net - accounted) * 1000 / decisions, 3)
    return out


def _fold_backends(processes: dict[str, dict[str, Any]]) -> None:
    """The PostgreSQL backends as one row: there are dozens, each a few ticks."""
    backends = {n: r for n, r in processes.items() if r["role"] == "database"}
    if not backends:
        return
    for name in backends:
        del processes[name]
    floor = any("(floor)" in name for name in backends)
    processes[f"postgres, {len(backends)} backends{' (floor)' if floor else ''}"] = {
        "role": "database",
        **{
            key: round(sum(r[key] for r in backends.values()), 3)
            for key in ("cpu_s", "per_call_ms", "net_per_call_ms")
        },
    }


def idle_rates(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per second of each process between two snapshots taken at rest."""
    seconds = max(after.at - before.at, 1e-6)
    return {
        name: (after.cpu[name] - start) / seconds  # type: ignore[operator]
        for name, start in before.cpu.items()
        if start is not None and after.cpu.get(name) is not None
    }


def stage_overhead_us(entries: int = 200_000) -> dict[str, float]:
    """What one stage costs its caller (microseconds per entry), plain and ``async def``."""
    from screening.cpu_stages import stage

    timed = stage("bench-overhead")

    def plain() -> None:
        with timed:
            pass

    started = time.thread_time()
    for _ in range(entries):
        plain()
    sync_us = (time.thread_time() - started) / entries * 1e6

    @timed
    async def step() -> None:
        return None

    async def many() -> None:
        for _ in range(entries // 10):
            await step()

    started = time.thread_time()
    asyncio.run(many())
    async_us = (time.thread_time() - started) / (entries // 10) * 1e6
    return {"sync_entry_us": round(sync_us, 3), "async_call_us": round(async_us, 3)}


def postgres_backends() -> list[tuple[str, str, int]]:
    """The bench database's PostgreSQL backends (not this thread's own) as ``(name, role,
    pid)``; the floor's, known by their application_name, are named so."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        rows = cursor.fetchall()
    return [
        (f"postgres-{pid}{' (floor)' if app == FLOOR_APP else ''}", "database", int(pid))
        for pid, app in rows
    ]


def redis_pid(url: str) -> int | None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return int(client.info("server")["process_id"])
    except Exception:
        return None
    finally:
        client.close()
