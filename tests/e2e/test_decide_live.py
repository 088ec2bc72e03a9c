"""The screening loop end to end over real sockets: simulator → listener → DB → decide → PBX."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from screening.models import AuditEvent, Call, Trunk
from tests.conftest import Live
from tests.support.calls import arrived, pbx_requests
from tests.support.live import make_user, session_for, wait_for

pytestmark = pytest.mark.live


def kinds(call: Call) -> list[str]:
    return list(AuditEvent.objects.filter(call=call).values_list("kind", flat=True))


def test_twenty_operators_race_for_one_call_and_exactly_one_wins(live: Live) -> None:
    users = [make_user(f"op{i}", first_name=f"Op{i}", last_name="Erator") for i in range(20)]
    sessions = [session_for(live.server, user) for user in users]
    sent = live.sim.inject("07700900111", "02079460000", "peer-to-41")
    call = arrived(sent)
    barrier = threading.Barrier(len(sessions))

    def press_accept(http: requests.Session) -> requests.Response:
        barrier.wait()
        return http.post(f"{live.url}/calls/{call.pk}/accept", timeout=10)

    with ThreadPoolExecutor(len(sessions)) as pool:
        responses = list(pool.map(press_accept, sessions))

    codes = [r.status_code for r in responses]
    assert codes.count(200) == 1, codes
    assert codes.count(409) == 19, codes
    winner = next(r.json() for r in responses if r.status_code == 200)
    assert winner["status"] == "accepted"
    assert winner["pbx_errcode"] == 0
    assert winner["pbx_round_trip_ms"] > 0
    loser = next(r.json() for r in responses if r.status_code == 409)
    assert winner["decided_by"] in loser["error"]
    # The PBX saw one decision, and carried it out.
    assert len(pbx_requests(live, "call/accept_inbound", sent["channel_id"])) == 1
    assert live.sim.call(sent["call_id"])["outcome"] == "accepted"
    call.refresh_from_db()
    assert call.status == "accepted"
    audit = kinds(call)
    for kind in ("received", "claimed", "pbx_request", "pbx_response", "accepted"):
        assert audit.count(kind) == 1, (kind, audit)


def test_refuse_drops_the_call_at_the_pbx(live: Live) -> None:
    http = session_for(live.server, make_user("alice", first_name="Alice"))
    sent = live.sim.inject("+442079460123", "02079460001", "register-bt")
    call = arrived(sent)
    answer = http.post(f"{live.url}/calls/{call.pk}/refuse", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["status"] == "refused"
    assert answer.json()["decided_by"] == "Alice"
    assert live.sim.call(sent["call_id"])["outcome"] == "refused"
    assert len(pbx_requests(live, "call/refuse_inbound", sent["channel_id"])) == 1


def test_no_decision_expires_and_the_pbx_routes_the_call_itself(live: Live) -> None:
    sent = live.sim.inject("07700900222", "02079460000", "peer-to-41")
    call = arrived(sent)
    wait_for(
        lambda: Call.objects.get(pk=call.pk).status == "expired",
        timeout=live.window + 5,
        what="the call to expire",
    )
    expired = AuditEvent.objects.get(call=call, kind="expired")
    assert "PBX routed the call itself" in expired.message
    assert live.sim.call(sent["call_id"])["outcome"] == "auto_accepted"
    assert not pbx_requests(live, "call/accept_inbound", sent["channel_id"])


def test_a_decision_after_the_last_useful_moment_is_refused_without_asking_the_pbx(
    live_factory: Any,
) -> None:
    live = live_factory(SCREEN_SAFETY_MARGIN_SECONDS="2.9")  # window 3 s: 0.1 s to act
    http = session_for(live.server, make_user("late"))
    sent = live.sim.inject("07700900333", "02079460000", "peer-to-41")
    call = arrived(sent)
    time.sleep(0.3)  # past deadline - margin, still inside the PBX's window
    answer = http.post(f"{live.url}/calls/{call.pk}/accept", timeout=10)
    assert answer.status_code == 409
    assert "Too late" in answer.json()["error"] or answer.json()["status"] == "expired"
    assert not pbx_requests(live, "call/accept_inbound", sent["channel_id"])


def test_caller_hanging_up_while_held_marks_the_call_gone(live: Live) -> None:
    http = session_for(live.server, make_user("bob"))
    sent = live.sim.inject("07700900444", "02079460000", "peer-to-41")
    call = arrived(sent)
    assert live.sim.hangup(sent["call_id"])
    wait_for(lambda: Call.objects.get(pk=call.pk).status == "gone", what="the call to be gone")
    answer = http.post(f"{live.url}/calls/{call.pk}/accept", timeout=10)
    assert answer.status_code == 409
    assert answer.json()["status"] == "gone"
    assert not pbx_requests(live, "call/accept_inbound", sent["channel_id"])


def test_pbx_error_is_recorded_with_its_errcode_and_the_operator_is_told(live: Live) -> None:
    http = session_for(live.server, make_user("carol"))
    sent = live.sim.inject("07700900555", "02079460000", "peer-to-41")
    call = arrived(sent)
    live.sim.set_faults(error_rate=1.0)
    answer = http.post(f"{live.url}/calls/{call.pk}/accept", timeout=10)
    assert answer.status_code == 502
    body = answer.json()
    assert body["status"] == "failed"
    assert body["pbx_errcode"] == -2
    assert "-2" in body["error"]
    failed = AuditEvent.objects.get(call=call, kind="failed")
    assert "-2" in failed.message
    assert AuditEvent.objects.get(call=call, kind="pbx_response").detail["errcode"] == -2


def test_pbx_that_answers_html_is_a_failure_not_a_crash(live: Live) -> None:
    http = session_for(live.server, make_user("dave"))
    sent = live.sim.inject("07700900556", "02079460000", "peer-to-41")
    call = arrived(sent)
    live.sim.set_faults(non_json_rate=1.0)
    answer = http.post(f"{live.url}/calls/{call.pk}/refuse", timeout=10)
    assert answer.status_code == 502
    assert answer.json()["status"] == "failed"
    assert Call.objects.get(pk=call.pk).status == "failed"


def test_trunk_with_screening_off_is_accepted_at_once(live: Live) -> None:
    Trunk.objects.create(name="sip-gamma", label="Support", screening_enabled=False)
    sent = live.sim.inject("07700900666", "02079460002", "sip-gamma")
    call = arrived(sent)
    wait_for(lambda: Call.objects.get(pk=call.pk).status == "accepted", what="auto-accept")
    call.refresh_from_db()
    assert call.decided_by_kind == "trunk_policy"
    assert live.sim.call(sent["call_id"])["outcome"] == "accepted"


def test_call_on_an_unknown_trunk_creates_the_trunk_and_is_screened(live: Live) -> None:
    sent = live.sim.inject("07700900777", "02079460003", "brand-new-trunk")
    call = arrived(sent)
    trunk = Trunk.objects.get(name="brand-new-trunk")
    assert trunk.auto_created
    assert trunk.screening_enabled
    assert call.status == "pending"
    assert "trunk_created" in kinds(call)


def test_decide_endpoint_refuses_bad_requests_cleanly(live: Live) -> None:
    sent = live.sim.inject("07700900888", "02079460000", "peer-to-41")
    call = arrived(sent)
    url = f"{live.url}/calls/{call.pk}/accept"
    assert requests.post(url, timeout=5).status_code in {401, 403}  # anonymous (no CSRF either)
    supervisor = session_for(live.server, make_user("sue", group="Supervisors"))
    assert supervisor.post(url, timeout=5).status_code == 403
    operator = session_for(live.server, make_user("olly"))
    assert operator.get(url, timeout=5).status_code == 405
    assert operator.post(f"{live.url}/calls/{call.pk}/shrug", timeout=5).status_code == 404
    assert operator.post(f"{live.url}/calls/999999/accept", timeout=5).status_code == 404
    no_csrf = requests.Session()
    no_csrf.cookies.update(operator.cookies)
    assert no_csrf.post(url, timeout=5).status_code == 403
    assert Call.objects.get(pk=call.pk).status == "pending"  # nothing above changed the call
    assert not pbx_requests(live, "call/accept_inbound", sent["channel_id"])


def test_a_slow_pbx_answer_for_one_call_does_not_delay_the_next_call(live: Live) -> None:
    Trunk.objects.create(name="sip-gamma", label="Support", screening_enabled=False)
    live.sim.set_faults(latency_ms=1500)
    unscreened = live.sim.inject("07700900001", "02079460002", "sip-gamma")  # accept takes 1.5 s
    arrived(unscreened)
    before = time.time()
    screened = live.sim.inject("07700900002", "02079460000", "peer-to-41")
    call = arrived(screened)
    # Intake stamped the call on arrival, not after the slow PBX answer for the other call.
    assert call.received_at.timestamp() - before < 0.5
    wait_for(
        lambda: Call.objects.get(pbx_call_id=unscreened["call_id"]).status == "accepted",
        timeout=5,
    )
