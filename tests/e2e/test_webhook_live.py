"""The webhook path end to end: the simulated PBX signs and pushes to a live server."""

from __future__ import annotations

import pytest

from screening.models import AuditEvent, Call
from screening.simulator import SimulatorThread
from tests.conftest import LiveFactory
from tests.support.live import wait_for

pytestmark = pytest.mark.live


SECRET = "0123456789abcdef0123456789abcdef"


def test_simulator_webhook_push_with_duplicates_reaches_operators_once(
    live_factory: LiveFactory,
) -> None:
    """The real path: the simulated PBX signs and pushes (every event twice) to a live server."""
    live = live_factory(PBX_EVENTS="webhook", PBX_WEBHOOK_SECRET=SECRET)
    sim: SimulatorThread = live.sim
    sim.sim.webhook_secret = SECRET
    sim.sim.webhook_url = f"{live.url}/pbx/webhook"
    sim.set_faults(webhook_duplicate=True)
    sent = sim.inject("07700900999", "02079460000", "peer-to-41")
    call = wait_for(lambda: Call.objects.filter(pbx_call_id=sent["call_id"]).first(), timeout=5)
    wait_for(lambda: AuditEvent.objects.filter(call=call, kind="duplicate").exists(), timeout=5)
    assert Call.objects.filter(pbx_call_id=sent["call_id"]).count() == 1
    assert live.server.health()["pbx_link"]["state"] == "webhook"
