"""Security across real processes: the login throttle shared by the web processes, the PBX's
secrets kept out of logs and pages, and the WebSocket Origin check in front of real Daphne."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp
import pytest
import requests
from django.contrib.auth import get_user_model

from screening.models import AuditEvent, Call
from screening.simulator import SimulatorThread
from tests.conftest import Live
from tests.support.cluster import Cluster
from tests.support.live import make_user, session_for, start_server, wait_for

pytestmark = pytest.mark.live


@pytest.mark.scaleout
def test_login_throttle_is_shared_by_every_web_process(cluster: Cluster) -> None:
    make_user("shared", password="right-horse-battery")

    def attempt(server_url: str, password: str) -> int:
        http = requests.Session()
        http.get(f"{server_url}/login/", timeout=5)
        token = http.cookies["csrftoken"]
        return http.post(
            f"{server_url}/login/",
            data={"username": "shared", "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{server_url}/login/"},
            allow_redirects=False,
            timeout=5,
        ).status_code

    a, b = cluster.urls
    # Default limit 5: spread over both processes, the fifth wrong password locks the pair.
    codes = [attempt(a if i % 2 else b, "wrong") for i in range(5)]
    assert codes == [200, 200, 200, 200, 429], codes
    assert attempt(a, "right-horse-battery") == 429
    assert attempt(b, "right-horse-battery") == 429


def test_pbx_credentials_and_tokens_never_appear_in_logs_or_pages(
    transactional_db: None, tmp_path: Path
) -> None:
    secret = f"client-secret-{uuid.uuid4().hex}"
    sim = SimulatorThread(call_rate=0.0, client_secret=secret, window_seconds=3.0).start()
    seen_tokens: set[str] = set()

    def remember_tokens() -> None:
        seen_tokens.update(sim.sim._tokens)
        seen_tokens.update(sim.sim._refresh)

    server = start_server(
        tmp_path,
        {
            "PBX_BASE_URL": sim.base_url,
            "PBX_CLIENT_ID": sim.client_id,
            "PBX_CLIENT_SECRET": secret,
            "SCREEN_WINDOW_SECONDS": "3",
            "PBX_HEARTBEAT_SECONDS": "1",
            "LOG_LEVEL": "DEBUG",
        },
    )
    try:
        remember_tokens()
        admin = get_user_model().objects.create_superuser("boss", password="x" * 12)
        operator = session_for(server, make_user("op"))
        boss = session_for(server, admin)
        pages: dict[str, str] = {}
        for round_ in range(2):
            sent = sim.inject(f"0770090050{round_}", "020", "peer-to-41")
            call = wait_for(
                lambda sent=sent: Call.objects.filter(pbx_call_id=sent["call_id"]).first()
            )
            operator.post(f"{server.url}/calls/{call.pk}/accept", timeout=10)
            remember_tokens()
            sim.revoke_tokens()  # the next decision renews: a new token to keep secret
        # The listener's token is refused at the door (HTTP 401 carries the URL with the token).
        sim.set_faults(refuse_websocket=True)
        sim.drop_sockets()
        wait_for(lambda: server.health()["pbx_link"]["state"] == "down", timeout=10)
        sim.set_faults(refuse_websocket=False)
        wait_for(lambda: server.health()["pbx_link"]["state"] == "up", timeout=10)
        remember_tokens()
        call_pk = Call.objects.first().pk
        audit_pk = AuditEvent.objects.first().pk
        for path in (
            "/healthz",
            "/",
            "/admin/",
            "/admin/screening/call/",
            f"/admin/screening/call/{call_pk}/change/",
            "/admin/screening/auditevent/",
            f"/admin/screening/auditevent/{audit_pk}/change/",
            "/admin/screening/trunk/",
            "/no-such-page",
            "/calls/999/accept",
        ):
            pages[path] = boss.get(f"{server.url}{path}", timeout=10).text
        pages["POST decide, unknown"] = boss.post(f"{server.url}/calls/999/accept", timeout=10).text
    finally:
        server.stop()
        sim.stop()
    assert len(seen_tokens) >= 4, "the flow should have issued several tokens"
    audit_text = " ".join(f"{a.message} {a.detail}" for a in AuditEvent.objects.all()) + " ".join(
        f"{c.pbx_errmsg}" for c in Call.objects.all()
    )
    haystacks = {"server log": server.log(), "audit": audit_text, **pages}
    for where, text in haystacks.items():
        assert secret not in text, f"the client secret appears in {where}"
        for token in seen_tokens:
            assert token not in text, f"a PBX token appears in {where}"
    assert "access_token" not in server.log()


def test_only_the_sites_own_origin_opens_the_operator_socket(live: Live) -> None:
    """A real login through the form, then the operator's real cookie offered from other origins:
    other ports, the other scheme, another allowed host name all get HTTP 403."""
    make_user("olly", password="right-horse-battery")
    http = requests.Session()
    http.get(f"{live.url}/login/", timeout=5)
    logged_in = http.post(
        f"{live.url}/login/",
        data={
            "username": "olly",
            "password": "right-horse-battery",
            "csrfmiddlewaretoken": http.cookies["csrftoken"],
        },
        headers={"Referer": f"{live.url}/login/"},
        allow_redirects=False,
        timeout=10,
    )
    assert logged_in.status_code == 302
    port = live.url.rsplit(":", 1)[1]
    cookie = f"sessionid={http.cookies['sessionid']}"

    async def attempt(origin: str, **headers: str) -> str:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(
                    live.url.replace("http://", "ws://") + "/ws/operator/",
                    headers={"Origin": origin, "Cookie": cookie, **headers},
                ) as ws:
                    msg = await ws.receive(timeout=5)
                    return "snapshot" if '"type":"snapshot"' in str(msg.data) else str(msg)
            except aiohttp.WSServerHandshakeError as exc:
                return str(exc.status)

    def outcome(origin: str, **headers: str) -> str:
        return asyncio.run(attempt(origin, **headers))

    assert outcome(live.url) == "snapshot"  # the control: the page's own origin
    for foreign in [
        "http://127.0.0.1:9999",
        "https://127.0.0.1",
        f"https://127.0.0.1:{port}",
        "http://localhost:1234",
        f"http://localhost:{port}",
        f"http://olly@127.0.0.1:{port}",
        "null",
    ]:
        assert outcome(foreign) == "403", foreign
    # Behind the TLS proxy the page is https, and the proxy says so (SECURE_PROXY_SSL_HEADER).
    assert outcome(f"https://127.0.0.1:{port}", **{"X-Forwarded-Proto": "https"}) == "snapshot"
    assert outcome(live.url, **{"X-Forwarded-Proto": "https"}) == "403"
    assert "WebSocket to /ws/operator/ refused" in live.server.log()
