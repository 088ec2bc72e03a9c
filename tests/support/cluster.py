"""The scale-out setup for tests: N `manage.py serve` processes (listener off) + one `pbx_listen`,
all on PostgreSQL and Redis, against the simulator. Processes are killed only by their own PIDs.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from django.conf import settings
from django.db import connection

from screening.devtools.procs import ChildProcess, start_manage
from screening.simulator import SimulatorThread
from tests.support.live import LiveServer, database_url, free_port, start_server

TEST_WINDOW = 3.0


def scaleout_missing() -> str | None:
    """Why this test process cannot run the scale-out tests, or None."""
    if connection.vendor != "postgresql":
        return "DATABASE_URL is not PostgreSQL"
    if not settings.REDIS_URL:
        return "REDIS_URL is not set"
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis at {settings.REDIS_URL} is not reachable: {exc}"
    return None


def missing_service(message: str) -> None:
    """Skip for a service this machine lacks; under CI=true, fail instead (the project's rule)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true, so this fails instead of skipping")
    pytest.skip(message)


def require_scaleout() -> None:
    reason = scaleout_missing()
    if reason is not None:
        missing_service(f"scale-out tests need PostgreSQL + Redis ({reason})")


@dataclass
class Cluster:
    sim: SimulatorThread
    tmp_path: Path
    env: dict[str, str]
    web: list[LiveServer] = field(default_factory=list)
    listener: ChildProcess | None = None

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.web]

    def start_listener(self, *, wait_up: bool = True) -> ChildProcess:
        self.listener = start_manage(
            f"pbx_listen-{time.monotonic_ns()}", ["pbx_listen"], env=self.env, log_dir=self.tmp_path
        )
        if wait_up:
            self.wait_link("up")
        return self.listener

    def start_web(self) -> LiveServer:
        server = start_server(self.tmp_path, {**self.env, "PBX_LISTENER": "off"})
        self.web.append(server)
        return server

    def link_state(self, server: LiveServer | None = None) -> str:
        try:
            return str((server or self.web[0]).health()["pbx_link"]["state"])
        except (requests.RequestException, ValueError, KeyError):
            return "unreachable"

    def wait_link(self, state: str, timeout: float = 15.0) -> float:
        """Seconds until the first web process reports the link ``state``."""
        started = time.monotonic()
        while self.link_state() != state:
            if self.listener is not None and not self.listener.alive():
                raise RuntimeError(f"pbx_listen exited:\n{self.listener.log()}")
            if time.monotonic() - started > timeout:
                raise AssertionError(f"link not {state!r} within {timeout} s")
            time.sleep(0.02)
        return time.monotonic() - started

    def stop(self) -> None:
        for server in self.web:
            server.stop()
        if self.listener is not None:
            self.listener.stop()
        self.sim.stop()


def start_cluster(
    tmp_path: Path,
    *,
    web: int = 2,
    window: float = TEST_WINDOW,
    redis_url: str | None = None,
    **env: str,
) -> Cluster:
    sim = SimulatorThread(call_rate=0.0, window_seconds=window).start()
    full_env = {
        "CONTACT_SYNC_MINUTES": "0",  # as in start_server: only the contact tests sync
        "DATABASE_URL": database_url(),
        "REDIS_URL": redis_url or settings.REDIS_URL,
        "PBX_BASE_URL": sim.base_url,
        "PBX_CLIENT_ID": sim.client_id,
        "PBX_CLIENT_SECRET": sim.client_secret,
        "SCREEN_WINDOW_SECONDS": str(window),
        "PBX_HEARTBEAT_SECONDS": "1",
        **env,
    }
    cluster = Cluster(sim, tmp_path, full_env)
    try:
        cluster.start_listener(wait_up=False)
        for _ in range(web):
            cluster.start_web()
        cluster.wait_link("up")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass
class RedisServer:
    """A private redis-server for tests that restart it (never the shared one)."""

    port: int
    workdir: Path
    child: ChildProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            missing_service("redis-server is not installed")
        flags = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.child = ChildProcess.start(
            "redis-server",
            [binary, "--port", str(self.port), *flags, "--dir", str(self.workdir)],
            env={},
            log_path=self.workdir / f"redis-{self.port}.log",
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: like a crash; a cache-only Redis comes back empty."""
        if self.child is not None:
            self.child.kill()

    def restart(self) -> float:
        """Kill (state lost, like a crash of a cache-only Redis) and start again; seconds down."""
        started = time.monotonic()
        self.kill()
        self.start()
        return time.monotonic() - started


def new_redis(tmp_path: Path) -> RedisServer:
    return RedisServer(free_port(), tmp_path).start()


def dump_logs(cluster: Cluster) -> str:
    parts: list[Any] = [f"--- web {s.url}\n{s.log()[-4000:]}" for s in cluster.web]
    if cluster.listener is not None:
        parts.append(f"--- pbx_listen\n{cluster.listener.log()[-4000:]}")
    return "\n".join(parts)
