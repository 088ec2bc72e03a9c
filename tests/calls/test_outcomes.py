"""Outcome confirmation: what the PBX says it did (30011/30012) against what we recorded, and
how a call nobody decided ends by those reports (expired when the PBX routed it, gone when it
ended in the hold). Runs on SQLite and, under DATABASE_URL=postgres://…, on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from screening.calls import decisions, endings, intake, outcomes, store
from screening.models import AuditEvent, Call, CallStatus, DecidedBy, StatsHour
from screening.pbx.answers import PbxAnswer
from screening.pbx.events import CallDetailRecord, CallMember, CallStateChanged, IncomingCall
from screening.reports import rollup, stats

CALL_ID = "1700000000.7"
CHANNEL = "PJSIP/trunk-peer-to-41-endpoint-0000007"


def received(
    status: str = CallStatus.PENDING,
    decision: str = "",
    kind: str = "",
    *,
    call_id: str = CALL_ID,
    at: datetime | None = None,
) -> Call:
    event = IncomingCall(call_id, CHANNEL, "07700900123", "02079460000", "peer-to-41", "S", "")
    call = intake.receive_call(event, via="test", received_at=at).call
    Call.objects.filter(pk=call.pk).update(status=status, decision=decision, decided_by_kind=kind)
    return call


def state(
    inbound: str,
    extension: str | None = None,
    *,
    call_id: str = CALL_ID,
    leg: str = "extension",
) -> None:
    members = [CallMember("inbound", CHANNEL, inbound, "", "07700900123", "020", "peer-to-41")]
    if extension is not None:
        number = "2002" if leg == "extension" else ""
        members.append(CallMember(leg, "PJSIP/2002-1", extension, number, "", "", ""))
    outcomes.record_call_state(CallStateChanged(call_id, "S", tuple(members)))


def cdr(status: str, talk: int = 0, *, duration: int | None = None, call_id: str = CALL_ID) -> None:
    duration = talk + 3 if duration is None else duration
    outcomes.record_cdr(
        CallDetailRecord(
            call_id, "S", status, "07700900123", "020", duration, talk, "peer-to-41", "020",
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


# --- A call nobody decided ends as the PBX reports it --------------------------------------------
#
# Every sequence of reports the PBX can send for a call still pending with us (a webhook delivered
# late, so our deadline runs past the PBX's; or its process died with the expiry timer), in the
# orders they can arrive in, with and without 30011 (Call Status monitoring off on the trunk).
# Routing evidence (an extension or an outbound leg ringing or answering, the trunk answered, a
# CDR that says answered, voicemail or outlived the hold) makes it expired: the PBX routed it
# after its window. A BYE or a CDR without any routing evidence makes it gone: the caller hung up
# in the hold. The in-process window is 10 s, so a 25-s CDR outlived the hold, a 4-s one did not.

Report = Callable[[], None]


def ring() -> None:
    state("ALERT", "RING")


def answer() -> None:
    state("ANSWERED", "ANSWER")


def bye_both() -> None:
    state("BYE", "BYE")


def bye_trunk() -> None:
    state("BYE")


@dataclass(frozen=True)
class Sequence:
    name: str
    reports: tuple[Report, ...]
    status: str  # what we record
    pbx_outcome: str
    decided_by: str  # the PBX report the ending audit row names ("" when nothing ended it)


EXPIRED, GONE = CallStatus.EXPIRED, CallStatus.GONE
SEQUENCES = [
    Sequence("issue: ring, answer, bye", (ring, answer, bye_both), EXPIRED, "answered", "30011"),
    Sequence(
        "ring, answer, bye, cdr answered",
        (lambda: state("ALERT"), ring, answer, bye_both, lambda: cdr("ANSWERED", 12)),
        EXPIRED,
        "answered",
        "30011",
    ),
    Sequence(
        "ring, bye, cdr no answer",
        (ring, bye_both, lambda: cdr("NO ANSWER", duration=25)),
        EXPIRED,
        "no_answer",
        "30011",
    ),
    Sequence("ring, trunk-only bye", (ring, bye_trunk), EXPIRED, "routed", "30011"),
    Sequence("bye with extension first", (bye_both, ring, answer), EXPIRED, "answered", "30011"),
    Sequence(
        "trunk-only bye before the ring report", (bye_trunk, ring), EXPIRED, "routed", "30011"
    ),
    Sequence(
        "trunk answered (IVR, queue), no extension",
        (lambda: state("ANSWERED"), bye_trunk),
        EXPIRED,
        "answered",
        "30011",
    ),
    Sequence(
        "outbound leg (forwarded outside)",
        (lambda: state("ALERT", "RING", leg="outbound"), bye_trunk),
        EXPIRED,
        "routed",
        "30011",
    ),
    Sequence(
        "cdr answered, no 30011", (lambda: cdr("ANSWERED", 30),), EXPIRED, "answered", "30012"
    ),
    Sequence(
        "cdr voicemail, no 30011", (lambda: cdr("VOICEMAIL", 0),), EXPIRED, "answered", "30012"
    ),
    Sequence(
        "cdr no answer outliving the hold, no 30011",
        (lambda: cdr("NO ANSWER", duration=25),),
        EXPIRED,
        "no_answer",
        "30012",
    ),
    Sequence(
        "cdr no answer within the hold, then a late ring report",
        (lambda: cdr("NO ANSWER", duration=4), ring),
        EXPIRED,
        "routed",
        "30011",
    ),
    Sequence(
        "trunk-only bye, then a cdr outliving the hold",
        (bye_trunk, lambda: cdr("NO ANSWER", duration=25)),
        EXPIRED,
        "no_answer",
        "30012",
    ),
    Sequence("hung up in the hold", (bye_trunk,), GONE, "caller_hung_up", "30011"),
    Sequence(
        "hung up in the hold, then its cdr",
        (lambda: state("ALERT"), bye_trunk, lambda: cdr("NO ANSWER", duration=4)),
        GONE,
        "caller_hung_up",
        "30011",
    ),
    Sequence(
        "cdr within the hold, no 30011",
        (lambda: cdr("BUSY", duration=4),),
        GONE,
        "caller_hung_up",
        "30012",
    ),
    Sequence("still held", (lambda: state("ALERT"),), CallStatus.PENDING, "", ""),
]


@pytest.mark.django_db
@pytest.mark.parametrize("deadline", ["ahead", "passed"], ids=["late-webhook", "dead-process"])
@pytest.mark.parametrize("sequence", SEQUENCES, ids=[s.name for s in SEQUENCES])
def test_a_call_nobody_decided_ends_as_the_pbx_reports_it(
    sequence: Sequence, deadline: str
) -> None:
    call = received(at=timezone.now() - timedelta(seconds=11) if deadline == "passed" else None)
    for report in sequence.reports:
        report()
    call.refresh_from_db()
    assert (call.status, call.pbx_outcome, call.outcome_mismatch) == (
        sequence.status,
        sequence.pbx_outcome,
        False,
    )
    assert not mismatch_rows(call)
    endings_rows = list(AuditEvent.objects.filter(call=call, kind__in=["expired", "gone"]))
    if sequence.status == CallStatus.PENDING:
        assert not endings_rows
        return
    expected_kind = DecidedBy.PBX_TIMEOUT if sequence.status == EXPIRED else DecidedBy.CALLER
    assert call.decided_by_kind == expected_kind
    assert call.finished_at is not None
    last = endings_rows[-1]  # a revision keeps the earlier row: the trail is append-only
    assert last.kind == sequence.status
    assert last.detail["source"] == sequence.decided_by
    assert f"({sequence.decided_by}: " in last.message  # the audit names the deciding report
    # The expiry timer or the sweeper coming later changes nothing.
    assert not endings.expire(call.pk)
    assert Call.objects.get(pk=call.pk).status == sequence.status


@dataclass(frozen=True)
class Decided:
    status: str
    decision: str = ""
    kind: str = ""


# Anything decided stays decided whatever the PBX reports (a mismatch is flagged where the
# reports contradict it, as before); a decision in flight is finished by its own answer.
DECIDED = [
    Decided(CallStatus.ACCEPTED, "accept", DecidedBy.OPERATOR),
    Decided(CallStatus.REFUSED, "refuse", DecidedBy.OPERATOR),
    Decided(CallStatus.EXPIRED, "", DecidedBy.PBX_TIMEOUT),
    Decided(CallStatus.GONE, "accept", DecidedBy.OPERATOR),  # 70130: channel not found
    Decided(CallStatus.FAILED, "accept", DecidedBy.OPERATOR),
    Decided(CallStatus.DECIDING, "accept", DecidedBy.OPERATOR),
    Decided(CallStatus.DECIDING, "refuse", DecidedBy.RULE),
]


@pytest.mark.django_db
@pytest.mark.parametrize("decided", DECIDED, ids=[f"{d.status}-{d.decision}" for d in DECIDED])
@pytest.mark.parametrize("sequence", SEQUENCES, ids=[s.name for s in SEQUENCES])
def test_a_decided_call_stays_decided_whatever_the_pbx_reports(
    sequence: Sequence, decided: Decided
) -> None:
    call = received(decided.status, decided.decision, decided.kind)
    for report in sequence.reports:
        report()
    call.refresh_from_db()
    assert (call.status, call.decision, call.decided_by_kind) == (
        decided.status,
        decided.decision,
        decided.kind,
    )
    assert not AuditEvent.objects.filter(call=call, kind__in=["expired", "gone"]).exists()


@pytest.mark.django_db
def test_the_statistics_count_calls_ended_by_pbx_reports_as_expired_or_gone() -> None:
    """Closed hours are read from the roll-up: a gone call that a late report shows routed
    becomes expired there too."""
    now = timezone.now()
    three_hours_ago = now - timedelta(hours=3)
    routed, hung_up, late = ("1700000001.1", "1700000001.2", "1700000001.3")
    for call_id in (routed, hung_up, late):
        received(call_id=call_id, at=three_hours_ago)
    for call_id in (routed, hung_up, late):
        # The reported sequence for one, a hang-up in the hold for the others.
        if call_id == routed:
            state("ALERT", "RING", call_id=call_id)
            state("ANSWERED", "ANSWER", call_id=call_id)
            state("BYE", "BYE", call_id=call_id)
        else:
            state("BYE", call_id=call_id)
    period = stats.resolve_period(stats.StatsForm({}), today=timezone.localdate())

    def counted() -> tuple[int, int, int]:
        total = stats.compute(period).total
        return total.offered, total.expired, total.gone

    assert counted() == (3, 1, 2)
    rollup.rollup(now)
    assert StatsHour.objects.filter(complete=True, hour=rollup.floor_hour(three_hours_ago))
    assert counted() == (3, 1, 2)
    state("ALERT", "RING", call_id=late)  # delivered three hours late (out of order)
    assert Call.objects.get(pbx_call_id=late).status == CallStatus.EXPIRED
    assert counted() == (3, 2, 1)
    rollup.rollup(now)
    assert counted() == (3, 2, 1)
