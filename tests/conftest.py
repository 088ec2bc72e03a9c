"""Shared fixtures: the PBX simulator over real sockets, and a real Daphne server process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.cache import cache

from screening.pbx.simulator import SimulatorThread
from tests.live import LiveServer, start_server

# Integration tests shorten the PBX's 10-s window (both sides agree on it) to keep the suite fast.
TEST_WINDOW = 3.0


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

    def start(window: float = TEST_WINDOW, **env: str) -> Live:
        sim = SimulatorThread(call_rate=0.0, window_seconds=window).start()
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
