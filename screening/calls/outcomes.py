"""What the PBX reports about a call after it offered it (30011 call state, 30012 CDR), merged
into the call as its PBX outcome and checked against our record (the mismatch flag).

Observations only ever strengthen: a weaker report never overwrites a stronger one, so webhook
retries and events arriving out of order cannot undo what is known.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from screening.calls import endings, reconcile, store
from screening.cpu_stages import stage
from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallStatus,
    DecidedBy,
    Decision,
    PbxOutcome,
)
from screening.pbx.events import CallDetailRecord, CallStateChanged, as_sent
from screening.webhooks import outbox

log = logging.getLogger("screening.calls.outcomes")


def _locked_calls(call_id: str) -> list[Call]:
    """Inside a transaction: the calls with this PBX call id (usually one), row-locked so a
    decision finishing in another thread cannot interleave, with what their push needs."""
    calls = Call.objects.select_related("trunk", "decided_by").select_for_update(of=("self",))
    # Ordered here as Call's default ordering would (newest first): resolving that ordering
    # against the two joins cost a quarter of building this query, for usually one row.
    found = list(calls.filter(pbx_call_id=call_id).order_by())
    return sorted(found, key=lambda call: call.received_at, reverse=True)


@stage("confirmations")
def record_call_state(event: CallStateChanged) -> None:
    """30011: keep the PBX's view in the audit; a call nobody decided ends as the PBX reports it
    (routed: expired; ended in the hold: gone); what the PBX did with the call is confirmed
    against our record.

    Every accepted call brings two or three of these within a second of the decision, so this is
    one transaction, and the push reuses the locked, updated rows instead of reloading them."""
    now = timezone.now()
    report = ", ".join(
        " ".join(filter(None, (m.kind, m.number, m.member_status))) for m in event.members
    )
    with transaction.atomic():
        ended: list[tuple[Call, str | None, list[AuditEvent], bool]] = []
        for call in _locked_calls(event.call_id):
            status = next(
                (m.member_status for m in event.members if m.channel_id == call.channel_id), None
            )
            observed = _outcome_from_state(call, event)
            events = [
                store.event(
                    call,
                    AuditKind.PBX_STATE,
                    ", ".join(f"{m.kind} {m.member_status}" for m in event.members),
                    at=now,
                    members=[{"kind": m.kind, "status": m.member_status} for m in event.members],
                    pbx_outcome=observed or "",
                    **as_sent(event),
                )
            ]
            ending = endings.end_by_pbx_report(
                call,
                routed=observed in _REACHED,
                ended=status == "BYE",
                now=now,
                source="30011",
                report=report,
            )
            if ending is not None:
                events.append(ending)
            ended.append((call, observed, events, ending is not None))
        # Audit rows only after every call's ending (which may reopen a statistics hour): they
        # take the audit chain's head (lock order: screening.calls.chain).
        for call, observed, events, changed in ended:
            store.record(*events)
            if settle_outcome(call, observed, now, source="30011") or changed:
                store.send_call_on_commit(call)


@stage("confirmations")
def record_cdr(event: CallDetailRecord) -> None:
    """30012: the PBX's call record, kept in the audit, ending a call nobody decided (it is
    over) and used to confirm the outcome."""
    now = timezone.now()
    report = f"CDR {event.status}, {event.call_duration}s, talk {event.talk_duration}s"
    with transaction.atomic():
        ended: list[tuple[Call, str | None, list[AuditEvent], bool]] = []
        calls = _locked_calls(event.call_id)
        for call in calls:
            observed = _outcome_from_cdr(call, event)
            events = [
                store.event(
                    call,
                    AuditKind.PBX_CDR,
                    f"CDR {event.status}, talk {event.talk_duration}s",
                    at=now,
                    status=event.status,
                    call_duration=event.call_duration,
                    talk_duration=event.talk_duration,
                    did_number=event.did_number,
                    pbx_outcome=observed,
                    **as_sent(event),
                )
            ]
            ending = endings.end_by_pbx_report(
                call,
                routed=observed in _REACHED,
                ended=True,
                now=now,
                source="30012",
                report=report,
            )
            if ending is not None:
                events.append(ending)
            ended.append((call, observed, events, ending is not None))
        for call, observed, events, changed in ended:  # as above: audit rows last
            store.record(*events)
            if settle_outcome(call, observed, now, source="30012") or changed:
                store.send_call_on_commit(call)
    if not calls:
        # A call we never saw: offered while the link was down, still going on when its outage
        # window was reconciled.
        reconcile.record_orphan_cdr(event.raw)


# How much each PBX observation says: a weaker one never overwrites a stronger one, so webhook
# retries and out-of-order events cannot undo what is known. DROPPED and CALLER_HUNG_UP both mean
# "ended before reaching anyone"; which of the two it is follows from our record (_hold_end).
_OUTCOME_RANK = {
    PbxOutcome.DROPPED: 1,
    PbxOutcome.CALLER_HUNG_UP: 1,
    PbxOutcome.ROUTED: 2,
    PbxOutcome.NO_ANSWER: 3,  # routed, then ended unanswered: the final word on a routed call
    PbxOutcome.ANSWERED: 4,
}
_HOLD_ENDS = frozenset({PbxOutcome.DROPPED, PbxOutcome.CALLER_HUNG_UP})
_REACHED = frozenset({PbxOutcome.ROUTED, PbxOutcome.NO_ANSWER, PbxOutcome.ANSWERED})


def _outcome_from_state(call: Call, event: CallStateChanged) -> str | None:
    """What a 30011 says the PBX did with the call; None while it is still held (ALERT only)."""
    ours = [m for m in event.members if m.kind == "inbound" and m.channel_id == call.channel_id]
    legs = [m for m in event.members if m.kind != "inbound"]  # extension or outbound members
    if any(m.member_status in {"ANSWER", "HOLD"} for m in legs) or any(
        m.member_status in {"ANSWERED", "HOLD"} for m in ours
    ):
        return PbxOutcome.ANSWERED
    if legs:
        return PbxOutcome.ROUTED  # another leg exists: the PBX sent the call somewhere
    if ours and ours[0].member_status == "BYE":
        return PbxOutcome.DROPPED  # ended before reaching anyone; _hold_end names who ended it
    return None


def _outcome_from_cdr(call: Call, event: CallDetailRecord) -> str:
    """What a 30012 says. Only an answer is conclusive: which CDR status a refused call gets is
    unconfirmed (the simulator says NO ANSWER; a real PBX may say BUSY or FAILED: docs/pbx.md),
    so any other status is read together with what we already know."""
    status = event.status.strip().upper()
    # "ANSWERD" is the EN doc table's spelling; voicemail picking up means the call was routed.
    if status.startswith("ANSWER") or status == "VOICEMAIL" or event.talk_duration > 0:
        return PbxOutcome.ANSWERED
    if call.pbx_outcome in {PbxOutcome.ROUTED, PbxOutcome.NO_ANSWER}:
        return PbxOutcome.NO_ANSWER
    if _undecided(call) and event.call_duration > _window_seconds(call):
        # Nobody decided it, and it lasted longer than the PBX holds a call: only the PBX routing
        # it at the end of its window lets a held call go on (unanswered, as it says).
        return PbxOutcome.NO_ANSWER
    if not call.pbx_outcome and call.status in {CallStatus.ACCEPTED, CallStatus.EXPIRED}:
        # No 30011 at all (Call Status not monitored on the trunk): an unanswered routed call and
        # a dropped one look alike here, so do not cry wolf.
        return PbxOutcome.NO_ANSWER
    return PbxOutcome.DROPPED


def _window_seconds(call: Call) -> float:
    return (call.deadline - call.received_at).total_seconds()


def _undecided(call: Call) -> bool:
    """Nobody decided the call: still pending, or gone on an earlier PBX report."""
    return call.status == CallStatus.PENDING or (
        call.status == CallStatus.GONE and call.decided_by_kind == DecidedBy.CALLER
    )


def _hold_end(call: Call) -> str:
    """A call that ended before reaching anyone: the 30011 BYE does not say who ended it, so
    read it from our record. An accepted call ending so is a mismatch (the PBX should have routed
    it); a caller hanging up in the instant between our accept and the ringing would look the
    same, which is rare enough for a flag a supervisor checks."""
    deciding_accept = call.status == CallStatus.DECIDING and call.decision == Decision.ACCEPT
    if call.status in {CallStatus.PENDING, CallStatus.GONE} or deciding_accept:
        return PbxOutcome.CALLER_HUNG_UP
    return PbxOutcome.DROPPED


def _contradicts(call: Call, outcome: str) -> bool:
    """Does the PBX's outcome contradict our final record? Open and failed calls contradict
    nothing (a failed decision may or may not have reached the PBX)."""
    if not outcome:
        return False
    if call.status == CallStatus.REFUSED:
        return outcome in _REACHED
    if call.status in {CallStatus.ACCEPTED, CallStatus.EXPIRED}:  # expired: the PBX routes it
        return outcome == PbxOutcome.DROPPED
    if call.status == CallStatus.GONE and call.decided_by_kind == DecidedBy.CALLER:
        return outcome in _REACHED
    return False


def settle_outcome(call: Call, observed: str | None, now: datetime, *, source: str) -> bool:
    """Merge a PBX observation into the call (row locked by the caller's transaction) and set or
    clear the mismatch flag. Returns whether the call changed, so the caller pushes it once.

    An unscreened call keeps what its reconciled record said: later reports are only kept in
    its audit trail (nobody decided it, so there is nothing to confirm)."""
    if call.status == CallStatus.UNSCREENED:
        return False
    outcome = call.pbx_outcome
    if observed and _OUTCOME_RANK[observed] > _OUTCOME_RANK.get(outcome, 0):
        outcome = observed
    if outcome in _HOLD_ENDS:
        outcome = _hold_end(call)  # also relabels once a decision in flight has finished
    mismatch = _contradicts(call, outcome)
    if outcome == call.pbx_outcome and mismatch == call.outcome_mismatch:
        return False
    outcome_at = now if outcome != call.pbx_outcome else call.pbx_outcome_at
    Call.objects.filter(pk=call.pk).update(
        pbx_outcome=outcome,
        pbx_outcome_at=outcome_at,
        outcome_mismatch=mismatch,
        version=F("version") + 1,
    )
    call.version += 1  # keeps ``call`` equal to the row (the decision path pushes it as is)
    was_mismatch = call.outcome_mismatch
    call.pbx_outcome, call.pbx_outcome_at, call.outcome_mismatch = outcome, outcome_at, mismatch
    label = call.get_pbx_outcome_display().lower()
    if mismatch and not was_mismatch:
        store.audit(
            call,
            AuditKind.MISMATCH,
            f"Mismatch: we recorded {call.get_status_display().lower()}, "
            f"but the PBX reports: {label}",
            at=now,
            status=call.status,
            pbx_outcome=outcome,
            source=source,
        )
        log.warning("call %s: recorded %s, PBX reports %s", call.pbx_call_id, call.status, outcome)
    elif was_mismatch and not mismatch:
        store.audit(
            call,
            AuditKind.MISMATCH,
            f"Mismatch resolved: the PBX reports: {label}",
            at=now,
            status=call.status,
            pbx_outcome=outcome,
            source=source,
        )
    # Outgoing webhooks (call.outcome_confirmed), in this transaction.
    outbox.outcome_settled(call, now)
    return True
