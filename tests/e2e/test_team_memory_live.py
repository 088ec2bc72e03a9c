"""Team memory against a live server and the PBX simulator: a refusal carries its reason without
a second PBX request, a bad reason decides nothing, and "Refuse and block" makes the next call
from the number the rule's, decided before any operator sees it."""

from __future__ import annotations

import json

import pytest

from screening.models import AuditEvent, AuditKind, Call, CallStatus, DecidedBy
from tests.conftest import Live
from tests.support.calls import arrived, pbx_requests
from tests.support.live import make_user, session_for, wait_for
from tests.support.sockets import OperatorSocket

pytestmark = pytest.mark.live


def test_a_refusal_carries_its_reason_as_form_or_json_and_the_pbx_is_asked_once(
    live: Live,
) -> None:
    http = session_for(live.server, make_user("alice", first_name="Alice"))
    for number, send in (
        ("07700900201", lambda url: http.post(url, data={"reason": "spam", "note": "Solar"})),
        (
            "07700900202",
            lambda url: http.post(
                url,
                data=json.dumps({"reason": "wrong_number", "note": "Wanted the bakery"}),
                headers={"Content-Type": "application/json"},
            ),
        ),
    ):
        sent = live.sim.inject(number, "02079460000", "peer-to-41")
        call = arrived(sent)
        answer = send(f"{live.url}/calls/{call.pk}/refuse")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "refused"
        assert body["call"]["reason"] in {"spam", "wrong_number"}
        assert body["call"]["reason_editable_until"] > body["call"]["received_at"]
        assert len(pbx_requests(live, "call/refuse_inbound", sent["channel_id"])) == 1
        assert live.sim.call(sent["call_id"])["outcome"] == "refused"
        call.refresh_from_db()
        assert call.reason_at is not None
        assert call.finished_at is not None
        assert call.reason_at >= call.finished_at  # recorded after the decision, never before
        kinds = list(
            AuditEvent.objects.filter(call=call).order_by("id").values_list("kind", flat=True)
        )
        assert kinds.index(AuditKind.REASON) > kinds.index(AuditKind.REFUSED), kinds
    reasons = dict(Call.objects.values_list("caller", "reason"))
    assert reasons == {"07700900201": "spam", "07700900202": "wrong_number"}
    assert Call.objects.get(caller="07700900202").reason_note == "Wanted the bakery"


def test_an_unknown_reason_decides_nothing(live: Live) -> None:
    http = session_for(live.server, make_user("bob"))
    sent = live.sim.inject("07700900203", "02079460000", "peer-to-41")
    call = arrived(sent)
    answer = http.post(f"{live.url}/calls/{call.pk}/refuse", data={"reason": "rude"})
    assert answer.status_code == 400
    assert "Unknown reason" in answer.json()["error"]
    assert Call.objects.get(pk=call.pk).status == CallStatus.PENDING
    assert not pbx_requests(live, "call/refuse_inbound", sent["channel_id"])
    # The operator can still decide it.
    assert http.post(f"{live.url}/calls/{call.pk}/refuse").status_code == 200


def test_refuse_and_block_decides_the_next_call_from_the_number_before_anyone_sees_it(
    live: Live,
) -> None:
    alice = make_user("alice", first_name="Alice")
    http = session_for(live.server, alice)
    with OperatorSocket(live, make_user("watcher")) as socket:
        first = live.sim.inject("07700900204", "02079460000", "peer-to-41")
        call = arrived(first)
        wait_for(lambda: "pending" in socket.statuses(first["call_id"]), what="the first card")
        refused = http.post(f"{live.url}/calls/{call.pk}/refuse", data={"reason": "abusive"})
        assert refused.status_code == 200
        block = http.post(
            f"{live.url}/calls/{call.pk}/follow-up", data={"action": "block", "duration": "1d"}
        )
        assert block.status_code == 201, block.text
        rule = block.json()["rule"]
        assert (rule["action"], rule["reason"]) == ("refuse", "abusive")

        again = live.sim.inject("+44 7700 900204", "02079460000", "peer-to-41")
        wait_for(
            lambda: Call.objects.filter(pbx_call_id=again["call_id"], status="refused").exists(),
            what="the rule to refuse the next call",
        )
        assert live.sim.call(again["call_id"])["outcome"] == "refused"
        wait_for(lambda: "refused" in socket.statuses(again["call_id"]), what="its outcome")
        assert "pending" not in socket.statuses(again["call_id"])
    nxt = Call.objects.get(pbx_call_id=again["call_id"])
    assert (nxt.decided_by_kind, nxt.rule_id, nxt.decided_by) == (DecidedBy.RULE, rule["id"], None)
