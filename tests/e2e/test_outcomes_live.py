"""Outcome confirmation from the simulator's real 30011/30012 over the WebSocket."""

from __future__ import annotations

from typing import Any

import pytest

from screening.models import AuditEvent, Call
from tests.conftest import Live, LiveFactory
from tests.support.live import make_user, session_for, wait_for
from tests.support.sockets import OperatorSocket

pytestmark = pytest.mark.live


@pytest.fixture
def answering_live(live_factory: LiveFactory) -> Live:
    """A PBX whose extensions always answer, quickly, so every routed call ends in a CDR soon."""
    return live_factory(
        sim_options={
            "answer_probability": 1.0,
            "ring_seconds": (0.05, 0.1),
            "talk_seconds": (0.1, 0.2),
        }
    )


def confirmed(live: Live, sent: dict[str, Any], pbx_outcome: str) -> Call:
    def check() -> Call | None:
        call = Call.objects.filter(pbx_call_id=sent["call_id"]).first()
        has_cdr = call and AuditEvent.objects.filter(call=call, kind="pbx_cdr").exists()
        return call if has_cdr and call.pbx_outcome == pbx_outcome else None

    return wait_for(check, timeout=live.window + 5, what=f"PBX outcome {pbx_outcome}")


def arrived(sent: dict[str, Any]) -> Call:
    return wait_for(lambda: Call.objects.filter(pbx_call_id=sent["call_id"]).first())


def test_outcomes_confirmed_from_the_simulators_events(answering_live: Live) -> None:
    live = answering_live
    http = session_for(live.server, make_user("alice"))
    accepted = live.sim.inject("07700900101")
    assert http.post(f"{live.url}/calls/{arrived(accepted).pk}/accept", timeout=10).ok
    refused = live.sim.inject("07700900102")
    assert http.post(f"{live.url}/calls/{arrived(refused).pk}/refuse", timeout=10).ok
    hung_up = live.sim.inject("07700900103", hangup_after=0.3)
    expired = live.sim.inject("07700900104")

    call = confirmed(live, accepted, "answered")
    assert (call.status, call.outcome_mismatch) == ("accepted", False)
    call = confirmed(live, refused, "dropped")
    assert (call.status, call.outcome_mismatch) == ("refused", False)
    call = confirmed(live, hung_up, "caller_hung_up")
    assert (call.status, call.outcome_mismatch) == ("gone", False)
    call = confirmed(live, expired, "answered")
    assert (call.status, call.outcome_mismatch) == ("expired", False)
    assert not AuditEvent.objects.filter(kind="mismatch").exists()
    assert live.sim.call(expired["call_id"])["outcome"] == "auto_accepted"


def test_a_pbx_that_routes_a_refused_call_is_flagged(answering_live: Live) -> None:
    live = answering_live
    live.sim.set_faults(ignore_refuse=True)
    alice = make_user("alice")
    http = session_for(live.server, alice)
    with OperatorSocket(live, alice) as socket:
        sent = live.sim.inject("07700900105")
        answer = http.post(f"{live.url}/calls/{arrived(sent).pk}/refuse", timeout=10)
        assert answer.json()["status"] == "refused"  # the PBX said SUCCESS...
        assert live.sim.call(sent["call_id"])["outcome"] == "accepted"  # ...and routed it
        call = confirmed(live, sent, "answered")
        assert call.status == "refused"
        assert call.outcome_mismatch
        (row,) = AuditEvent.objects.filter(call=call, kind="mismatch")
        assert "recorded refused" in row.message
        wait_for(
            lambda: any(m.get("call", {}).get("outcome_mismatch") for m in list(socket.messages)),
            what="the flagged call pushed to the operator",
        )
    assert Call.objects.filter(outcome_mismatch=True).count() == 1
