"""/healthz on a real server: the state words for anyone (a load balancer needs only those and the
status code); the PBX's address and the error text only for logged-in staff and a monitor holding
``HEALTHZ_TOKEN``."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from screening.models import Trunk
from screening.pbx import trunks
from screening.pbx.client import PbxClient
from tests.conftest import Live, LiveFactory
from tests.support.live import make_user, session_for, wait_for

pytestmark = pytest.mark.live

TOKEN = "monitor-" + "k" * 32
WORDS_ONLY = {"status", "database", "cache", "channel_layer", "pbx_link", "lookups", "trunks"}


def pbx_gone(live: Live) -> str:
    """Stop the PBX: the link goes down with a detail naming it. Returns its host:port."""
    address = live.sim.base_url.split("://", 1)[1]
    live.sim.stop()
    staff = session_for(live.server, make_user("watcher", group=None, is_staff=True))
    wait_for(
        lambda: address in staff.get(f"{live.url}/healthz", timeout=5).json()["pbx_link"]["detail"],
        timeout=15,
        what="the link down with the PBX's address in its detail",
    )
    return address


def bearer(value: str) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {value}"
    return http


def check(live: Live, callers: dict[str, requests.Session], address: str, detail: set[str]) -> None:
    for who, http in callers.items():
        answer = http.get(f"{live.url}/healthz", timeout=5)
        body: dict[str, Any] = answer.json()
        # The PBX is down: calls go unscreened, but this web process can serve (not a 503).
        assert answer.status_code == 200, (who, body)
        assert body["status"] == "degraded", (who, body)
        assert body["pbx_link"]["state"] == "down", (who, body)
        if who in detail:
            assert address in body["pbx_link"]["detail"], (who, body)
            assert body["pbx_link"]["unscreened"] is True
            assert body["details"] == {}, (who, body)  # every service check is ok
        else:
            assert set(body) == WORDS_ONLY, (who, body)
            assert body["pbx_link"] == {"state": "down"}, (who, body)
            assert {body[k] for k in ("database", "cache", "channel_layer")} == {"ok"}
            assert body["lookups"] == "off"  # no CALLER_LOOKUP_URL configured
            assert body["trunks"] == "ok"
            assert address not in answer.text, who
            assert address.split(":")[1] not in answer.text, who  # not even the port


def test_healthz_detail_only_for_staff_and_the_token(live_factory: LiveFactory) -> None:
    live = live_factory(HEALTHZ_TOKEN=TOKEN)
    address = pbx_gone(live)
    callers = {
        "anonymous": requests.Session(),
        "operator": session_for(live.server, make_user("op")),
        "supervisor": session_for(live.server, make_user("sup", group="Supervisors")),
        "no role": session_for(live.server, make_user("nobody", group=None)),
        "staff": session_for(live.server, make_user("admin", group=None, is_staff=True)),
        "good token": bearer(TOKEN),
        "wrong token": bearer(TOKEN[:-1] + "x"),
        "token prefix": bearer(TOKEN[:8]),
        "empty token": bearer(""),
    }
    check(live, callers, address, detail={"staff", "good token"})
    assert "wrong HEALTHZ_TOKEN" in live.server.log()


def test_without_healthz_token_no_bearer_token_is_accepted(live_factory: LiveFactory) -> None:
    live = live_factory()  # HEALTHZ_TOKEN unset: token access is off, staff still see the detail
    address = pbx_gone(live)
    callers = {
        "anonymous": requests.Session(),
        "empty token": bearer(""),
        "some token": bearer(TOKEN),
        "staff": session_for(live.server, make_user("admin", group=None, is_staff=True)),
    }
    check(live, callers, address, detail={"staff"})


def test_a_trunk_the_pbx_does_not_hold_for_screening_degrades_healthz(
    live_factory: LiveFactory,
) -> None:
    live = live_factory(HEALTHZ_TOKEN=TOKEN)
    monitor = bearer(TOKEN)
    wait_for(
        lambda: monitor.get(f"{live.url}/healthz", timeout=5).json()["pbx_link"]["state"] == "up",
        what="the link up",
    )
    Trunk.objects.create(name="peer-to-41")
    Trunk.objects.create(name="register-bt", label="Sales line")
    client = PbxClient(live.sim.base_url, live.sim.client_id, live.sim.client_secret)
    trunks.check_monitors(client)
    assert monitor.get(f"{live.url}/healthz", timeout=5).json()["status"] == "ok"

    live.sim.set_trunk_monitor("register-bt", control_inbound=False)
    trunks.check_monitors(client)  # what the admin action and the sweeper do
    body = monitor.get(f"{live.url}/healthz", timeout=5).json()
    assert (body["status"], body["trunks"]) == ("degraded", "not_screened")
    assert body["pbx_link"]["state"] == "up"  # the link is fine: the trunk is not screened
    assert body["unscreened_trunks"] == ["register-bt"]
    assert "register-bt (Sales line)" in body["details"]["trunks"]
    anonymous = requests.get(f"{live.url}/healthz", timeout=5)
    assert anonymous.status_code == 200
    assert (anonymous.json()["status"], anonymous.json()["trunks"]) == ("degraded", "not_screened")
    assert "register-bt" not in anonymous.text
    page = session_for(live.server, make_user("sue", group="Supervisors"))
    shown = page.get(f"{live.url}/supervisor/", timeout=5).text
    assert 'id="trunk-warning"' in shown
    assert "Calls on register-bt are not being screened." in shown
