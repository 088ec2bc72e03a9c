"""Shared fixtures: the PBX simulator over real sockets, and a real Daphne server process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client

from screening.simulator import SimulatorThread
from tests.support.cluster import Cluster, require_scaleout, start_cluster
from tests.support.live import LiveServer, make_user, start_server
from tests.support.reporting import History, build_history

# Integration tests shorten the PBX's 10-s window (both sides agree on it) to keep the suite fast.
TEST_WINDOW = 3.0


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI a configured but unreachable PostgreSQL or Redis fails the run, never skips."""
    if os.environ.get("CI", "").lower() != "true":
        return
    problems = []
    if os.environ.get("REDIS_URL"):
        import redis

        try:
            redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=3).ping()
        except redis.RedisError as exc:
            problems.append(f"Redis at {os.environ['REDIS_URL']}: {exc}")
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        import psycopg

        url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
        try:
            psycopg.connect(url, connect_timeout=3).close()
        except psycopg.Error as exc:
            problems.append(f"PostgreSQL at {url}: {exc}")
    if problems:
        pytest.exit("CI=true and a required service is down: " + "; ".join(problems), returncode=1)


@pytest.fixture(scope="session", autouse=True)
def _release_test_database(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Worker threads (run_blocking) keep PostgreSQL connections open for reuse; end them before
    pytest-django drops the test database, or the drop fails and test databases pile up."""
    yield
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    """The token, the link state and push sequence numbers live in the cache: start clean."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def pbx_sim() -> Iterator[SimulatorThread]:
    """A fresh simulated Yeastar PBX on a free loopback port, generating no calls by itself."""
    with SimulatorThread(call_rate=0.0) as sim:
        yield sim


@pytest.fixture
def pbx(pbx_sim: SimulatorThread, settings: Any) -> SimulatorThread:
    """``pbx_sim``, with this process's PBX settings pointing at it (for the admin's actions,
    the sync commands and anything else that builds its own PbxClient)."""
    settings.PBX_BASE_URL = pbx_sim.base_url
    settings.PBX_CLIENT_ID = pbx_sim.client_id
    settings.PBX_CLIENT_SECRET = pbx_sim.client_secret
    return pbx_sim


@pytest.fixture
def admin_web() -> Client:
    """A test client logged in as a superuser, for the Django admin."""
    client = Client()
    client.force_login(make_user("root", group=None, is_staff=True, is_superuser=True))
    return client


def messages_of(response: Any) -> list[str]:
    """The Django messages a response's page shows, as "level: text"."""
    return [f"{m.level_tag}: {m}" for m in response.context["messages"]]


@dataclass
class Live:
    sim: SimulatorThread
    server: LiveServer
    window: float

    @property
    def url(self) -> str:
        return self.server.url


LiveFactory = Callable[..., Live]


@pytest.fixture
def live_factory(transactional_db: None, tmp_path: Path) -> Iterator[LiveFactory]:
    """Start a simulator and a `manage.py serve` process connected to it (WebSocket events)."""
    started: list[Live] = []

    def start(
        window: float = TEST_WINDOW, sim_options: dict[str, Any] | None = None, **env: str
    ) -> Live:
        sim = SimulatorThread(call_rate=0.0, window_seconds=window, **(sim_options or {})).start()
        try:
            server = start_server(
                tmp_path,
                {
                    "PBX_BASE_URL": sim.base_url,
                    "PBX_CLIENT_ID": sim.client_id,
                    "PBX_CLIENT_SECRET": sim.client_secret,
                    "SCREEN_WINDOW_SECONDS": str(window),
                    "PBX_HEARTBEAT_SECONDS": "1",
                    **env,
                },
            )
        except BaseException:
            sim.stop()
            raise
        live = Live(sim, server, window)
        started.append(live)
        return live

    yield start
    for live in started:
        live.server.stop()
        live.sim.stop()


@pytest.fixture
def live(live_factory: LiveFactory) -> Live:
    return live_factory()


@pytest.fixture
def cluster(transactional_db: None, tmp_path: Path) -> Iterator[Cluster]:
    """Two `serve` processes (listener off) + one `pbx_listen` on PostgreSQL + Redis."""
    require_scaleout()
    started = start_cluster(tmp_path)
    yield started
    started.stop()


# The supervisor-report tests share one hand-built history (tests/support/reporting.py) and a
# logged-in supervisor; a module may override ``history`` with a bigger one.
@pytest.fixture
def history() -> History:
    return build_history()


@pytest.fixture
def supervisor(client: Client) -> Client:
    client.force_login(make_user("sam", group="Supervisors"))
    return client
