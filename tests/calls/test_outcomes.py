"""Outcome confirmation: what the PBX says it did (30011/30012) against what we recorded."""

from __future__ import annotations

import pytest

from screening.calls import decisions, intake, outcomes, store
from screening.models import AuditEvent, Call, CallStatus
from screening.pbx.answers import PbxAnswer
from screening.pbx.events import CallDetailRecord, CallMember, CallStateChanged, IncomingCall

CALL_ID = "1700000000.7"
CHANNEL = "PJSIP/trunk-peer-to-41-endpoint-0000007"


def received(status: str = CallStatus.PENDING, decision: str = "") -> Call:
    event = IncomingCall(CALL_ID, CHANNEL, "07700900123", "02079460000", "peer-to-41", "S", "")
    call = intake.receive_call(event, via="test").call
    Call.objects.filter(pk=call.pk).update(status=status, decision=decision)
    return call


def state(inbound: str, extension: str | None = None) -> None:
    members = [CallMember("inbound", CHANNEL, inbound, "", "07700900123", "020", "peer-to-41")]
    if extension is not None:
        members.append(CallMember("extension", "PJSIP/2002-1", extension, "2002", "", "", ""))
    outcomes.record_call_state(CallStateChanged(CALL_ID, "S", tuple(members)))


def cdr(status: str, talk: int = 0) -> None:
    outcomes.record_cdr(
        CallDetailRecord(
            CALL_ID, "S", status, "07700900123", "020", talk + 3, talk, "peer-to-41", "020",
            "2026-01-01 10:00:00", "Inbound", {},
        )
    )  # fmt: skip


def outcome(call: Call) -> tuple[str, bool]:
    call.refresh_from_db()
    return call.pbx_outcome, call.outcome_mismatch


def mismatch_rows(call: Call) -> list[str]:
    return list(
        AuditEvent.objects.filter(call=call, kind="mismatch").values_list("message", flat=True)
    )


@pytest.mark.django_db
def test_an_accepted_call_routed_answered_and_ended_is_consistent() -> None:
    call = received(CallStatus.ACCEPTED, "accept")
    state("ALERT")  # still held: says nothing yet
    assert outcome(call) == ("", False)
    state("ALERT", "RING")
    assert outcome(call) == ("routed", False)
    version = Call.objects.get(pk=call.pk).version
    state("ANSWERED", "ANSWER")
    assert outcome(call) == ("answered", False)
    assert call.version > version  # browsers apply the push
    state("BYE", "BYE")
    cdr("ANSWERED", talk=12)
    assert outcome(call) == ("answered", False)
    assert AuditEvent.objects.filter(call=call, kind="pbx_state").count() == 4
    assert AuditEvent.objects.get(call=call, kind="pbx_cdr").detail["pbx_outcome"] == "answered"
    assert not mismatch_rows(call)


@pytest.mark.django_db
@pytest.mark.parametrize("cdr_status", ["NO ANSWER", "BUSY", "FAILED"])
def test_a_refused_call_is_dropped_whatever_its_unconfirmed_cdr_status(cdr_status: str) -> None:
    call = received(CallStatus.REFUSED, "refuse")
    state("BYE")
    assert outcome(call) == ("dropped", False)
    cdr(cdr_status)
    assert outcome(call) == ("dropped", False)


@pytest.mark.django_db
def test_a_refused_call_the_pbx_routed_and_answered_is_a_mismatch() -> None:
    call = received(CallStatus.REFUSED, "refuse")
    state("ALERT", "RING")
    assert outcome(call) == ("routed", True)
    (row,) = mismatch_rows(call)
    assert "recorded refused" in row
    assert "routed" in row
    cdr("ANSWERD", talk=4)  # the EN doc table's spelling
    assert outcome(call) == ("answered", True)
    assert len(mismatch_rows(call)) == 1  # flagged once


@pytest.mark.django_db
def test_an_accepted_call_the_pbx_dropped_is_a_mismatch() -> None:
    call = received(CallStatus.ACCEPTED, "accept")
    state("BYE")
    assert outcome(call) == ("dropped", True)
    cdr("NO ANSWER")  # a weaker word never clears what 30011 showed
    assert outcome(call) == ("dropped", True)


@pytest.mark.django_db
def test_caller_hanging_up_in_the_hold_is_gone_and_consistent() -> None:
    call = received()
    state("BYE")
    call.refresh_from_db()
    assert call.status == "gone"
    assert outcome(call) == ("caller_hung_up", False)
    cdr("NO ANSWER")
    assert outcome(call) == ("caller_hung_up", False)


@pytest.mark.django_db
def test_expired_calls_are_routed_by_the_pbx_so_routing_is_consistent() -> None:
    call = received(CallStatus.EXPIRED)
    state("ALERT", "RING")
    assert outcome(call) == ("routed", False)
    cdr("NO ANSWER")
    assert outcome(call) == ("no_answer", False)


@pytest.mark.django_db
def test_without_call_status_monitoring_a_cdr_alone_does_not_cry_wolf() -> None:
    call = received(CallStatus.ACCEPTED, "accept")
    cdr("NO ANSWER")
    assert outcome(call) == ("no_answer", False)


@pytest.mark.django_db
def test_out_of_order_events_never_downgrade_what_is_known() -> None:
    call = received(CallStatus.ACCEPTED, "accept")
    cdr("VOICEMAIL")
    state("ALERT", "RING")
    state("BYE")
    assert outcome(call) == ("answered", False)


@pytest.mark.django_db
def test_a_30011_that_overtakes_the_pbx_answer_is_checked_when_the_decision_finishes() -> None:
    call = received(CallStatus.DECIDING, "refuse")
    state("ALERT", "RING")
    assert outcome(call) == ("routed", False)  # nothing final to contradict yet
    decisions.finish(
        store.load(call.pk), PbxAnswer(CallStatus.REFUSED, "Refused", 0, "SUCCESS", 5.0)
    )
    assert outcome(call) == ("routed", True)
    assert len(mismatch_rows(call)) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("finished", "expected"),
    [(CallStatus.GONE, ("caller_hung_up", False)), (CallStatus.ACCEPTED, ("dropped", True))],
)
def test_a_hang_up_during_an_accept_is_read_once_the_accept_finished(
    finished: str, expected: tuple[str, bool]
) -> None:
    call = received(CallStatus.DECIDING, "accept")
    state("BYE")
    assert outcome(call) == ("caller_hung_up", False)
    decisions.finish(
        store.load(call.pk), PbxAnswer(finished, finished, 70130, "CAHNNEL ID NOT FOUND", 5.0)
    )
    assert outcome(call) == expected
