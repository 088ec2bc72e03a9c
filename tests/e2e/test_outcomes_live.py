"""Outcome confirmation from the simulator's real 30011/30012 over the WebSocket."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone

from screening.models import AuditEvent, Call
from tests.conftest import Live, LiveFactory
from tests.support.calls import arrived
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


# --- A call nobody decided, ended by the PBX's own reports (signed webhooks) ----------------------

WEBHOOK_SECRET = "0123456789abcdef0123456789abcdef"
TRUNK = "peer-to-41"


class SignedPbx:
    """Pushes events to a live server the way a Yeastar PBX does by webhook: the ``{type, sn,
    msg}`` envelope (``msg`` JSON-encoded), signed with X-Signature = Base64(HMAC-SHA256)."""

    def __init__(self, live: Live) -> None:
        self.url = f"{live.url}/pbx/webhook"
        self.http = requests.Session()

    def push(self, event_type: int, msg: dict[str, Any]) -> None:
        body = json.dumps({"type": event_type, "sn": "3631A2124XXX", "msg": json.dumps(msg)})
        raw = body.encode()
        signature = base64.b64encode(
            hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).digest()
        ).decode()
        answer = self.http.post(
            self.url,
            data=raw,
            headers={"Content-Type": "application/json", "X-Signature": signature},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text  # recorded when the PBX gets its 2xx

    def offer(self, call_id: str, caller: str) -> None:
        self.push(30016, {"call_id": call_id, "members": [self._inbound(call_id, "ALERT", caller)]})

    def state(self, call_id: str, inbound: str, extension: str | None = None) -> None:
        members = [self._inbound(call_id, inbound)]
        if extension is not None:
            members.append(
                {
                    "extension": {
                        "number": "2002",
                        "channel_id": f"PJSIP/2002-{call_id}",
                        "member_status": extension,
                        "call_path": "",
                    }
                }
            )
        self.push(30011, {"call_id": call_id, "members": members})

    def cdr(self, call_id: str, status: str, duration: int, talk: int) -> None:
        self.push(
            30012,
            {
                "call_id": call_id, "time_start": "2026-12-01 10:00:00", "call_from": "07700900201",
                "call_to": "2002", "call_duration": duration, "talk_duration": talk,
                "src_trunk_name": TRUNK, "dst_trunk_name": " ", "pin_code": " ",
                "status": status, "type": "Inbound", "recording": "", "did_number": "02079460000",
                "did_name": "", "agent_ring_time": 0,
            },
        )  # fmt: skip

    @staticmethod
    def _inbound(call_id: str, status: str, caller: str = "07700900201") -> dict[str, Any]:
        return {
            "inbound": {
                "from": caller,
                "to": "02079460000",
                "trunk_name": TRUNK,
                "channel_id": f"PJSIP/trunk-{TRUNK}-endpoint-{call_id}",
                "member_status": status,
                "call_path": " ",
            }
        }


def totals_on_the_stats_page(live: Live) -> dict[str, int]:
    """The totals tiles a supervisor sees on /stats/."""
    http = session_for(live.server, make_user("sam", group="Supervisors"))
    page = http.get(f"{live.url}/stats/", timeout=10)
    assert page.status_code == 200
    tiles = re.findall(r'<li data-status="(\w+)"><span class="tile-value">(\d+)</span>', page.text)
    return {status: int(n) for status, n in tiles}


def test_calls_the_pbx_routed_or_dropped_while_pending_with_us_by_signed_webhooks(
    live_factory: LiveFactory,
) -> None:
    """The reported sequence: 30016, then (still pending with us: the webhook came late, so our
    deadline runs past the PBX's) 30011 ALERT + extension RING, ANSWERED/ANSWER, BYE. The PBX
    routed it: expired, not "the caller hung up", and no mismatch."""
    live = live_factory(PBX_EVENTS="webhook", PBX_WEBHOOK_SECRET=WEBHOOK_SECRET)
    pbx = SignedPbx(live)
    routed, hung_up, cdr_only = "1764583200.11", "1764583200.12", "1764583200.13"
    pbx.offer(routed, "07700900201")
    pbx.offer(hung_up, "07700900202")
    pbx.offer(cdr_only, "07700900203")  # a trunk without Call Status monitoring: no 30011
    assert set(Call.objects.values_list("status", flat=True)) == {"pending"}

    pbx.state(routed, "ALERT", "RING")
    pbx.state(routed, "ANSWERED", "ANSWER")
    pbx.state(routed, "BYE", "BYE")
    pbx.state(hung_up, "BYE")
    pbx.cdr(cdr_only, "ANSWERED", duration=40, talk=28)

    def recorded(call_id: str) -> tuple[str, str, str, bool]:
        call = Call.objects.get(pbx_call_id=call_id)
        return call.status, call.decided_by_kind, call.pbx_outcome, call.outcome_mismatch

    assert recorded(routed) == ("expired", "pbx_timeout", "answered", False)
    assert recorded(hung_up) == ("gone", "caller", "caller_hung_up", False)
    assert recorded(cdr_only) == ("expired", "pbx_timeout", "answered", False)
    (ending,) = AuditEvent.objects.filter(call__pbx_call_id=routed, kind__in=["expired", "gone"])
    assert ending.kind == "expired"
    assert "30011: inbound ALERT, extension 2002 RING" in ending.message  # the report that decided
    assert not AuditEvent.objects.filter(kind="mismatch").exists()

    # Our own deadline passing afterwards (the expiry timer, the sweeper) changes nothing.
    last_deadline = max(Call.objects.values_list("deadline", flat=True))
    wait_for(lambda: timezone.now() > last_deadline + timedelta(seconds=2.5), timeout=20)
    assert recorded(routed) == ("expired", "pbx_timeout", "answered", False)
    assert recorded(hung_up) == ("gone", "caller", "caller_hung_up", False)
    assert totals_on_the_stats_page(live) == {
        "accepted": 0, "refused": 0, "expired": 2, "gone": 1, "failed": 0, "unscreened": 0,
    }  # fmt: skip
