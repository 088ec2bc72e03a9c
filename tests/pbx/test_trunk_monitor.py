"""What the PBX's Trunk Status Monitor really holds, read back from the simulator over real
sockets: shown per trunk in the admin, and a trunk screening expects but the PBX does not hold
for it (Control Inbound Call off, or not in the monitor list) is reported on /healthz and on the
supervisors' pages, with what to do."""

from __future__ import annotations

import asyncio
import copy
import re
from typing import Any

import pytest
from django.test import Client

from screening.models import Trunk
from screening.pbx import trunks
from screening.pbx.events import Event, IncomingCall
from screening.pbx.listener import PbxListener
from screening.simulator import SimulatorThread
from tests.conftest import messages_of
from tests.pbx.test_listener import run_with_listener
from tests.pbx.test_trunk_admin import CHANGELIST, run_action
from tests.support.live import make_user, until

pytestmark = pytest.mark.django_db

TURN_ON = '"Turn on Control Inbound Call on the PBX"'


def flags_shown(admin_web: Client) -> dict[str, tuple[str, str]]:
    """Per trunk row of the admin list: (Control Inbound Call, Call Status) as shown."""
    page = admin_web.get(CHANGELIST).content.decode()
    rows = {}
    for row in re.findall(r"<tr>.*?</tr>", page, re.S):
        name = re.search(r'class="field-name"><a [^>]*>([^<]+)</a>', row)
        shown = re.findall(r'<span class="pbx-flag"[^>]*>([^<]+)</span>', row)
        if name:
            rows[name.group(1)] = tuple(shown)
    return rows


def healthz(token: str = "monitor-" + "t" * 32) -> dict[str, Any]:
    return Client().get("/healthz", HTTP_AUTHORIZATION=f"Bearer {token}").json()


def test_sync_shows_what_the_pbx_holds_per_trunk(admin_web: Client, pbx: SimulatorThread) -> None:
    pbx.set_trunk_monitor("register-bt", control_inbound=False, call_status=False)
    pbx.set_trunk_monitor("sip-gamma", listed=False)
    Trunk.objects.create(name="old-isdn", screening_enabled=False)
    said = messages_of(admin_web.post(f"{CHANGELIST}sync/", follow=True))
    assert any(
        m.startswith("warning: Calls on these trunks are routed without being screened")
        and "register-bt, sip-gamma." in m
        and TURN_ON in m
        for m in said
    ), said
    assert [e["endpoint"] for e in pbx.log("trunk_status_monitor/list")] == [
        "trunk_status_monitor/list"
    ]
    Trunk.objects.create(name="added-later")  # never read from the PBX
    assert flags_shown(admin_web) == {
        "added-later": ("not checked", "not checked"),
        "old-isdn": ("not at PBX", "not at PBX"),
        "peer-to-41": ("on", "on"),
        "register-bt": ("OFF", "OFF"),
        "sip-gamma": ("not at PBX", "not at PBX"),
    }
    stored = {t.name: (t.pbx_control_inbound, t.pbx_call_status) for t in Trunk.objects.all()}
    assert stored["register-bt"] == (False, False)
    assert stored["sip-gamma"] == (None, None)
    assert stored["peer-to-41"] == (True, True)
    assert Trunk.objects.get(name="added-later").pbx_monitor_checked_at is None


@pytest.mark.django_db(transaction=True)  # /healthz reads the trunks in a worker thread
def test_a_trunk_with_control_inbound_call_off_is_warned_about_until_it_is_turned_on(
    admin_web: Client, pbx: SimulatorThread, settings: Any
) -> None:
    settings.HEALTHZ_TOKEN = "monitor-" + "t" * 32
    bt = Trunk.objects.create(name="register-bt", label="Sales line")
    Trunk.objects.create(name="peer-to-41")
    supervisor = Client()
    supervisor.force_login(make_user("sue", group="Supervisors"))
    operator = Client()
    operator.force_login(make_user("olly", group="Operators"))

    # Not read yet: nothing is known, nothing is claimed.
    assert healthz()["trunks"] == "ok"
    assert b"trunk-warning" not in supervisor.get("/supervisor/").content

    pbx.set_trunk_monitor("register-bt", control_inbound=False)
    said = run_action(admin_web, "check_at_pbx", [bt])
    assert (
        "success: Checked at the PBX: Control Inbound Call on for 1, off for 1, "
        "not in the PBX's monitor list: 0." in said
    ), said

    # The overall status on a running server: tests/e2e/test_healthz_live.py.
    body = healthz()
    assert body["trunks"] == "not_screened"
    assert body["unscreened_trunks"] == ["register-bt"]
    assert "register-bt (Sales line)" in body["details"]["trunks"]
    assert TURN_ON in body["details"]["trunks"]
    anonymous = Client().get("/healthz").json()
    assert anonymous["trunks"] == "not_screened"
    assert "register-bt" not in str(anonymous)  # names are for staff and monitors

    page = supervisor.get("/supervisor/").content.decode()
    warning = re.search(r'<div id="trunk-warning".*?</div>', page, re.S)
    assert warning, "no warning on the supervisor page"
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", warning.group(0)))
    assert "Calls on register-bt are not being screened." in text
    assert "Control Inbound Call is not on at the PBX for trunk register-bt" in text
    assert "Turn on Control Inbound Call on the PBX" in text.replace("&quot;", '"')
    assert b"trunk-warning" in supervisor.get("/audit/").content  # every supervisor page
    assert b"trunk-warning" not in operator.get("/").content

    said = run_action(admin_web, "turn_on_control_inbound", [bt])
    assert "success: Control Inbound Call and Call Status turned on for: register-bt" in said
    assert flags_shown(admin_web)["register-bt"] == ("on", "on")  # read back after the change
    assert healthz()["trunks"] == "ok"
    assert b"trunk-warning" not in supervisor.get("/supervisor/").content


@pytest.mark.django_db(transaction=True)
def test_a_trunk_missing_from_the_pbx_monitor_list_is_warned_about(
    admin_web: Client, pbx: SimulatorThread
) -> None:
    gamma = Trunk.objects.create(name="sip-gamma")
    pbx.set_trunk_monitor("sip-gamma", listed=False)
    run_action(admin_web, "check_at_pbx", [gamma])
    assert healthz()["trunks"] == "not_screened"
    page = admin_web.get("/supervisor/")
    assert b"Calls on sip-gamma are not being screened." in page.content
    said = run_action(admin_web, "turn_on_control_inbound", [gamma])  # the PBX adds it to its list
    assert "success: Control Inbound Call and Call Status turned on for: sip-gamma" in said
    assert healthz()["trunks"] == "ok"


def test_check_at_the_pbx_reports_a_pbx_problem(admin_web: Client, pbx: SimulatorThread) -> None:
    trunk = Trunk.objects.create(name="peer-to-41")
    pbx.set_faults(http_500_rate=1.0)
    said = run_action(admin_web, "check_at_pbx", [trunk])
    assert any(m.startswith("error: Could not read the PBX's Trunk Status Monitor") for m in said)
    assert Trunk.objects.get(pk=trunk.pk).pbx_monitor_checked_at is None


def test_a_trunk_without_control_inbound_call_sends_no_30016(pbx_sim: SimulatorThread) -> None:
    # As on a real PBX: the call is neither held nor announced, it is routed at once.
    pbx_sim.set_trunk_monitor("register-bt", control_inbound=False)

    async def scenario(listener: PbxListener, events: list[Event]) -> None:
        unseen = await asyncio.to_thread(
            pbx_sim.inject, "07700900201", "01134960100", "register-bt"
        )
        assert unseen["held"] is False
        seen = await asyncio.to_thread(pbx_sim.inject, "07700900202", "02079460000", "peer-to-41")
        await until(lambda: any(getattr(e, "call_id", "") == seen["call_id"] for e in events))
        await until(lambda: pbx_sim.call(unseen["call_id"])["state"] == "ended", within=10)
        info = pbx_sim.call(unseen["call_id"])
        assert info["outcome"] == "not_held"
        assert info["delivered"] == 0
        offered = [e.call_id for e in events if isinstance(e, IncomingCall)]
        assert offered == [seen["call_id"]]
        # It still ends with a CDR, like every call the PBX carries.
        await until(lambda: any(getattr(e, "call_id", "") == unseen["call_id"] for e in events))

    run_with_listener(pbx_sim, scenario, heartbeat=5.0)


@pytest.mark.django_db(transaction=True)
def test_the_sweeper_reads_the_monitor_list_once_per_interval(pbx: SimulatorThread) -> None:
    Trunk.objects.create(name="register-bt")
    pbx.set_trunk_monitor("register-bt", control_inbound=False)

    async def two_ticks() -> None:
        check = copy.copy(trunks.monitor_check)
        check.tick()
        await check.wait()
        fresh = copy.copy(trunks.monitor_check)  # another process: the cache key holds it off
        fresh.tick()
        await fresh.wait()

    asyncio.run(two_ticks())
    assert len(pbx.log("trunk_status_monitor/list")) == 1
    assert [t.name for t in trunks.unscreened_trunks()] == ["register-bt"]
