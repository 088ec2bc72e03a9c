"""A decision on the connection each web process opened when the call arrived, end to end: the
simulator behind TLS and a counting proxy, a real `serve` process, an operator's POST."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from screening.simulator import SimulatorThread
from screening.simulator.netdelay import DelayProxyThread
from screening.simulator.tls import make_certificates
from tests.conftest import TEST_WINDOW
from tests.support.calls import arrived, pbx_requests
from tests.support.cluster import Cluster, require_scaleout
from tests.support.live import (
    LiveServer,
    database_url,
    make_user,
    session_for,
    start_server,
    wait_for,
)

pytestmark = pytest.mark.live


class Setup:
    def __init__(self, sim: SimulatorThread, proxy: DelayProxyThread, server: LiveServer) -> None:
        self.sim, self.proxy, self.server = sim, proxy, server
        self.url = server.url


@pytest.fixture
def tls_live(transactional_db: None, tmp_path: Path) -> Iterator[Setup]:
    certs = make_certificates(tmp_path / "tls")
    sim = SimulatorThread(
        call_rate=0.0, window_seconds=TEST_WINDOW + 2, ssl_context=certs.server_context()
    ).start()
    proxy = DelayProxyThread("127.0.0.1", int(sim.base_url.rsplit(":", 1)[1]), 0.0).start()
    try:
        server = start_server(
            tmp_path,
            {
                "PBX_BASE_URL": f"https://127.0.0.1:{proxy.port}",
                "PBX_CLIENT_ID": sim.client_id,
                "PBX_CLIENT_SECRET": sim.client_secret,
                "PBX_VERIFY_TLS": str(certs.ca),
                "SCREEN_WINDOW_SECONDS": str(TEST_WINDOW + 2),
                "PBX_HEARTBEAT_SECONDS": "1",
            },
        )
    except BaseException:
        proxy.stop()
        sim.stop()
        raise
    yield Setup(sim, proxy, server)
    server.stop()
    proxy.stop()
    sim.stop()


def test_the_accept_goes_out_on_the_connection_opened_when_the_call_arrived(
    tls_live: Setup,
) -> None:
    http = session_for(tls_live.server, make_user("alice", first_name="Alice"))
    before = tls_live.proxy.connections
    sent = tls_live.sim.inject("07700900111", "02079460000", "peer-to-41")
    call = arrived(sent)
    # The server opened one connection for the call while nobody had decided yet.
    wait_for(lambda: tls_live.proxy.connections == before + 1, what="the warm connection")
    opened = tls_live.proxy.connections

    response = http.post(f"{tls_live.url}/calls/{call.pk}/accept", timeout=10)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    assert tls_live.proxy.connections == opened  # the accept needed no handshake
    assert len(pbx_requests(tls_live, "call/accept_inbound", sent["channel_id"])) == 1
    assert tls_live.sim.call(sent["call_id"])["outcome"] == "accepted"


@pytest.mark.scaleout
def test_in_scale_out_each_web_process_opens_one_and_the_deciding_one_uses_it(
    transactional_db: None, tmp_path: Path
) -> None:
    require_scaleout()
    window = TEST_WINDOW + 2
    certs = make_certificates(tmp_path / "tls")
    sim = SimulatorThread(
        call_rate=0.0, window_seconds=window, ssl_context=certs.server_context()
    ).start()
    proxy = DelayProxyThread("127.0.0.1", int(sim.base_url.rsplit(":", 1)[1]), 0.0).start()
    env = {
        "CONTACT_SYNC_MINUTES": "0",
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "PBX_BASE_URL": f"https://127.0.0.1:{proxy.port}",
        "PBX_CLIENT_ID": sim.client_id,
        "PBX_CLIENT_SECRET": sim.client_secret,
        "PBX_VERIFY_TLS": str(certs.ca),
        "SCREEN_WINDOW_SECONDS": str(window),
        "PBX_HEARTBEAT_SECONDS": "1",
    }
    cluster = Cluster(sim, tmp_path, env)
    try:
        cluster.start_listener(wait_up=False)
        cluster.start_web()
        cluster.start_web()
        cluster.wait_link("up")
        http = session_for(cluster.web[1], make_user("bob", first_name="Bob"))
        idle = proxy.open_now  # the listener's event socket
        before = proxy.connections

        sent = sim.inject("07700900222", "02079460000", "peer-to-41")
        call = arrived(sent)
        # One connection per web process (pbx_listen opens none): either may get the POST.
        wait_for(lambda: proxy.connections == before + 2, what="a warm connection per process")
        response = http.post(f"{cluster.web[1].url}/calls/{call.pk}/accept", timeout=10)

        assert response.status_code == 200, response.text
        assert proxy.connections == before + 2  # the accept needed no handshake
        accepted = [
            e
            for e in sim.log("call/accept_inbound")
            if (e.get("body") or {}).get("channel_id") == sent["channel_id"]
        ]
        assert len(accepted) == 1
        # The other process's connection is closed when the call's window ends.
        wait_for(lambda: proxy.open_now <= idle, timeout=window + 3, what="warm connections closed")
    finally:
        cluster.stop()
        proxy.stop()
