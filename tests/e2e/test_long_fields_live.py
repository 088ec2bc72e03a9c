"""A call whose caller, called number and trunk name are longer than their columns, injected into
the simulated PBX with ``POST /_sim/calls`` and delivered over the WebSocket or the webhook to a
live server: it is stored, offered to an operator and decided by them, not left to the PBX's
window (before, PostgreSQL refused the insert and the PBX routed the call unscreened)."""

from __future__ import annotations

import pytest
import requests

from screening.models import AuditEvent, Call, Trunk
from tests.conftest import LiveFactory
from tests.support.live import make_user, session_for, wait_for

pytestmark = pytest.mark.live

SECRET = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("transport", ["websocket", "webhook"])
def test_a_call_with_overlong_fields_is_offered_and_decided(
    live_factory: LiveFactory, transport: str
) -> None:
    if transport == "webhook":
        live = live_factory(PBX_EVENTS="webhook", PBX_WEBHOOK_SECRET=SECRET)
        live.sim.sim.webhook_secret = SECRET
        live.sim.sim.webhook_url = f"{live.url}/pbx/webhook"
    else:
        live = live_factory()
    caller, called, trunk_name = "8" * 80, "0200" + "1" * 76, "main-trunk-" + "t" * 140
    answer = requests.post(
        f"{live.sim.base_url}/_sim/calls",
        json={"from": caller, "to": called, "trunk_name": trunk_name},
        timeout=5,
    )
    assert answer.status_code == 201
    sent = answer.json()
    call = wait_for(
        lambda: Call.objects.filter(pbx_call_id=sent["call_id"]).first(),
        timeout=5,
        what="the call to reach pbxscreen",
    )
    assert call.status == "pending"  # offered to the operators
    assert call.caller == caller[: len(call.caller)]
    assert len(call.caller) == Call._meta.get_field("caller").max_length
    assert call.called == called[: len(call.called)]
    trunk = Trunk.objects.get(pk=call.trunk_id)
    assert trunk.name == trunk_name[: Trunk._meta.get_field("name").max_length]
    # The audit keeps what the PBX sent.
    received = AuditEvent.objects.get(call=call, kind="received")
    inbound = "30016 msg.members[0].inbound"
    assert received.detail["clipped"] == {
        f"{inbound}.from": caller,
        f"{inbound}.to": called,
        f"{inbound}.trunk_name": trunk_name,
    }

    http = session_for(live.server, make_user("alice", first_name="Alice"))
    decided = http.post(f"{live.url}/calls/{call.pk}/accept", timeout=10)
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "accepted"
    assert decided.json()["decided_by"] == "Alice"
    # The PBX carried out the operator's decision on the channel it offered.
    assert live.sim.call(sent["call_id"])["outcome"] == "accepted"
    accepts = [
        e
        for e in live.sim.log("call/accept_inbound")
        if (e.get("body") or {}).get("channel_id") == sent["channel_id"]
    ]
    assert len(accepts) == 1
