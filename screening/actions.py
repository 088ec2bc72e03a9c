"""Every state change of a call lives here.

Each function writes the call row and its audit rows in one transaction and pushes to operators only
after that transaction commits, so a browser never sees a state the database does not hold.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from screening import dbpriority, presence, push, rules
from screening.access import stream_for_trunk
from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallStatus,
    DecidedBy,
    Decision,
    FallbackPolicy,
    PbxOutcome,
    Rule,
    Trunk,
)
from screening.pbx.client import (
    PbxAuthError,
    PbxClient,
    PbxError,
    PbxNotConfigured,
    PbxTransportError,
)
from screening.pbx.events import CallDetailRecord, CallStateChanged, IncomingCall
from screening.presenters import call_payload, caller_history, user_name

log = logging.getLogger("screening.actions")

# Yeastar answers 70130 "CAHNNEL ID NOT FOUND" when the channel is gone (caller hung up, or the PBX
# already routed it); pbx-api.md §5 leaves the code for "window passed" unconfirmed, so 60001
# (DATA NOT FOUND) is treated the same way.
CHANNEL_GONE_ERRCODES = frozenset({70130, 60001})
# A DECIDING call this long past its deadline lost its deciding process; nothing will finish it.
STUCK_DECISION_GRACE = timedelta(seconds=30)
# Timers fire at the deadline; the sweeper only catches calls whose timer died with its process.
SWEEP_GRACE = timedelta(seconds=2)


def _event(
    call: Call,
    kind: str,
    message: str = "",
    *,
    actor: AbstractBaseUser | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> AuditEvent:
    """An audit row, not yet saved (``_record`` saves several in one INSERT)."""
    return AuditEvent(
        call=call,
        kind=kind,
        message=message[:512],
        actor=actor,
        at=at or timezone.now(),
        detail=detail,
    )


def _audit(call: Call, kind: str, message: str = "", **fields: Any) -> AuditEvent:
    """One audit row, saved now (``fields``: those of ``_event``)."""
    event = _event(call, kind, message, **fields)
    event.save()
    return event


def _record(*events: AuditEvent) -> None:
    """Save audit rows in one statement, in order (ids ascend, so the trail reads in order)."""
    AuditEvent.objects.bulk_create(events)


def _transition(call: Call | int, changes: dict[str, Any], **where: Any) -> Call | None:
    """Inside a transaction: apply ``changes`` (plus a version bump) to the call if its row still
    matches ``where``. Returns the call as the database now holds it, or None if it no longer
    matches.

    Given a loaded ``Call``, the UPDATE also requires the version it was loaded at: every write to
    a call bumps its version, so when that matches the loaded copy plus ``changes`` *is* the row,
    and the reload (a query with two joins, on every decision) is skipped. When something else
    wrote the row since, it falls back to update-then-reload.
    """
    rows = Call.objects.filter(**where)
    if isinstance(call, Call):
        won = rows.filter(pk=call.pk, version=call.version).update(
            **changes, version=F("version") + 1
        )
        if won:
            for field, value in changes.items():
                setattr(call, field, value)
            call.version += 1
            return call
        call = call.pk
    if not rows.filter(pk=call).update(**changes, version=F("version") + 1):
        return None
    return _load(call)


_local = threading.local()


def _thread_client() -> PbxClient:
    """One PBX client per worker thread, so decisions reuse its keep-alive connection (a new
    TCP + TLS handshake per decision costs a real PBX far more than the request itself)."""
    key = (settings.PBX_BASE_URL, settings.PBX_CLIENT_ID, settings.PBX_CLIENT_SECRET)
    cached = getattr(_local, "pbx", None)
    if cached is None or cached[0] != key:
        cached = _local.pbx = (key, PbxClient.from_settings())
    return cached[1]


def _load(call_pk: int) -> Call:
    return Call.objects.select_related("trunk", "decided_by").get(pk=call_pk)


def _push_loaded(kind: str, call: Call) -> int:
    """After commit: push ``call`` as the transaction that just committed left it (loaded or
    updated in place there, so it is what the database holds): no state change reloads it."""
    return push.publish(kind, {"call": call_payload(call)}, stream=stream_for_trunk(call.trunk))


# --- Intake ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    call: Call
    created: bool
    # (decision, by_kind) when a rule, the trunk policy or the fallback policy decided the call.
    # It is already claimed (DECIDING) in the same transaction that stored it, so no operator ever
    # sees it pending; the caller sends it (deciding.carry_out), off the intake path, because
    # intake must never wait on the PBX.
    auto_decision: tuple[str, str] | None = None


def receive_call(event: IncomingCall, *, via: str, received_at: datetime | None = None) -> Received:
    """Record a 30016. Idempotent on the PBX's call and channel ids (webhooks are retried).

    This is the store-before-push step every operator waits on, so it is kept short: everything
    that only reads (trunk, caller history, rules, presence) runs before the write transaction,
    which on SQLite holds the database's one write lock; the transaction is then one INSERT for
    the call, one for its audit rows and, for an automatic decision, the claim.
    """
    now = received_at or timezone.now()
    trunk, trunk_created = _trunk_for(event.trunk_name)
    history = caller_history(event.caller, now)
    auto = _auto_decision(event.caller, trunk, now)
    try:
        with dbpriority.urgent(), transaction.atomic():
            call = Call.objects.create(
                pbx_call_id=event.call_id,
                channel_id=event.channel_id,
                pbx_sn=event.sn,
                caller=event.caller,
                called=event.called,
                trunk=trunk,
                received_at=now,
                deadline=now + timedelta(seconds=settings.SCREEN_WINDOW_SECONDS),
                history=history,
            )
            events = [
                _event(
                    call,
                    AuditKind.RECEIVED,
                    f"Incoming call from {event.caller or 'withheld'} to {event.called} via {via}",
                    at=now,
                    via=via,
                    sn=event.sn,
                    channel_id=event.channel_id,
                    trunk_name=event.trunk_name,
                    member_status=event.member_status,
                )
            ]
            if trunk_created:
                events.append(
                    _event(call, AuditKind.TRUNK_CREATED, f"Unknown trunk {trunk.name!r} created")
                )
            _record(*events)
            decided = _claim_automatically(call, auto, now) if auto is not None else None
            if decided is None:
                transaction.on_commit(lambda: _announce(call))
    except IntegrityError:
        # Already stored: a retried webhook, the same call by both transports, or another
        # process between. The unique constraint is the check, so a new call pays no query for it.
        existing = _existing_call(event)
        if existing is None:
            raise
        _audit(existing, AuditKind.DUPLICATE, f"Duplicate 30016 via {via} ignored", via=via)
        return Received(existing, created=False)
    if trunk_created:
        log.warning("call %s arrived on unknown trunk %r: created it", event.call_id, trunk.name)
    return Received(call, created=True, auto_decision=decided)


def _trunk_for(name: str) -> tuple[Trunk, bool]:
    try:
        return Trunk.objects.get_or_create(
            name=name, defaults={"label": name, "auto_created": True}
        )
    except IntegrityError:  # created by another process between the get and the create
        return Trunk.objects.get(name=name), False


@dataclass(frozen=True)
class _Auto:
    decision: str
    by_kind: str
    rule: Rule | None = None
    note: str = ""


def _auto_decision(caller: str, trunk: Trunk, now: datetime) -> _Auto | None:
    """Whether a new call is decided without an operator, in this order: a matching rule, the
    trunk not screening, nobody online who may decide it (fallback policy). Reads only."""
    rule = rules.find_rule(caller, trunk, now)
    if rule is not None:
        return _Auto(rule.action, DecidedBy.RULE, rule, rule.describe())
    if not trunk.screening_enabled:
        return _Auto(Decision.ACCEPT, DecidedBy.TRUNK_POLICY)
    if trunk.fallback_policy != FallbackPolicy.WINDOW and not presence.any_online_for(trunk):
        decision = trunk.fallback_policy
        note = f"nobody online may decide calls on {trunk.name} (fallback: {decision})"
        return _Auto(decision, DecidedBy.FALLBACK, note=note)
    return None


def _claim_automatically(call: Call, auto: _Auto, now: datetime) -> tuple[str, str] | None:
    """Claim a call being stored for ``auto``, in the transaction that stores it, so no operator
    ever sees it pending."""
    detail: dict[str, Any] = {}
    if auto.rule is not None:
        detail = {"rule_id": auto.rule.pk, "rule_name": auto.note}
    claimed = _claim(
        call, auto.decision, None, auto.by_kind, rule=auto.rule, note=auto.note, **detail
    )
    if claimed is None:
        # Only when the event sat queued past the last useful moment: let operators see it.
        return None
    if auto.rule is not None:
        rules.record_hit(auto.rule, now)
    return auto.decision, auto.by_kind


def _existing_call(event: IncomingCall) -> Call | None:
    return Call.objects.filter(pbx_call_id=event.call_id, channel_id=event.channel_id).first()


def _announce(call: Call) -> None:
    seq = _push_loaded("call", call)  # just created and committed: nothing to reload
    stream = stream_for_trunk(call.trunk)
    _audit(call, AuditKind.PUSHED, f"Pushed to {stream}", stream=stream, seq=seq)


# --- Decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecideResult:
    call: Call
    ok: bool  # the PBX carried out the decision
    conflict: bool = False  # someone else decided, or the window closed, before our claim
    reason: str = ""


def decide(
    call: Call | int,
    decision: str,
    *,
    user: AbstractBaseUser | None = None,
    by_kind: str = DecidedBy.OPERATOR,
    client: PbxClient | None = None,
) -> DecideResult:
    """Claim the call (exactly one claimant wins), send the decision to the PBX, record the result.

    ``call`` is a pk, or the call as loaded with its trunk (the view loads it to check access),
    which saves the reload after the claim. Raises ``Call.DoesNotExist`` for an unknown call.
    """
    if decision not in Decision.values:
        raise ValueError(f"unknown decision {decision!r}")
    claimed = _claim(call, decision, user, by_kind)
    if claimed is None:
        current = _load(call.pk if isinstance(call, Call) else call)
        return DecideResult(current, ok=False, conflict=True, reason=_conflict_reason(current))
    return _send_to_pbx(claimed, decision, client)


def claim(
    call: Call | int, decision: str, *, user: AbstractBaseUser | None = None
) -> Call | DecideResult:
    """An operator's claim, the first step of ``decide``: the claimed call, or the conflict."""
    if decision not in Decision.values:
        raise ValueError(f"unknown decision {decision!r}")
    claimed = _claim(call, decision, user, DecidedBy.OPERATOR)
    if claimed is None:
        current = _load(call.pk if isinstance(call, Call) else call)
        return DecideResult(current, ok=False, conflict=True, reason=_conflict_reason(current))
    return claimed


def _claim(
    call: Call | int,
    decision: str,
    user: AbstractBaseUser | None,
    by_kind: str,
    *,
    rule: Rule | None = None,
    note: str = "",
    **detail: Any,
) -> Call | None:
    now = timezone.now()
    margin = timedelta(seconds=settings.SCREEN_SAFETY_MARGIN_SECONDS)
    endpoint = _endpoint(decision)
    changes = {
        "status": CallStatus.DECIDING,
        "decision": decision,
        "decided_by": user,
        "decided_by_kind": by_kind,
        "rule": rule,
        "claimed_at": now,
    }
    with dbpriority.urgent(), transaction.atomic():
        claimed = _transition(call, changes, status=CallStatus.PENDING, deadline__gt=now + margin)
        if claimed is None:
            return None
        who = user_name(user) or claimed.get_decided_by_kind_display()
        message = f"{who} decided to {decision}" + (f": {note}" if note else "")
        _record(
            _event(
                claimed, AuditKind.CLAIMED, message, actor=user, at=now, by_kind=by_kind, **detail
            ),
            # Saved before the request goes out (a crash after this leaves a visible trace).
            _event(
                claimed,
                AuditKind.PBX_REQUEST,
                f"POST {endpoint}",
                actor=user,
                at=now,
                endpoint=endpoint,
                channel_id=claimed.channel_id,
            ),
        )
        transaction.on_commit(lambda: _push_loaded("call", claimed))
    return claimed


def _conflict_reason(call: Call) -> str:
    who = user_name(call.decided_by) or call.get_decided_by_kind_display()
    if call.status == CallStatus.DECIDING:
        return f"{who} is deciding this call"
    if call.status in {CallStatus.ACCEPTED, CallStatus.REFUSED, CallStatus.FAILED}:
        return f"Already decided by {who}: {call.get_status_display()}"
    if call.status == CallStatus.PENDING:
        return "Too late: the PBX window is closing and it will route the call itself"
    return call.get_status_display()


def _endpoint(decision: str) -> str:
    return "call/accept_inbound" if decision == Decision.ACCEPT else "call/refuse_inbound"


@dataclass(frozen=True)
class PbxAnswer:
    """What became of a decision at the PBX, ready to record."""

    status: str
    message: str
    errcode: int | None = None
    errmsg: str = ""
    round_trip_ms: float | None = None


def ask_pbx(call: Call, decision: str, client: PbxClient | None = None) -> PbxAnswer:
    """Send a claimed call's decision to the PBX. No database work: the web process runs this in
    its PBX pool, where threads mostly wait on the network, apart from the database workers."""
    # The PBX's own cut-off: an answer later than this is worthless, the call is already routed.
    deadline = call.deadline.timestamp()
    try:
        pbx = client or _thread_client()
        send = pbx.accept_inbound if decision == Decision.ACCEPT else pbx.refuse_inbound
        response = send(call.channel_id, deadline=deadline)
    except PbxAuthError as exc:
        message = f"Failed: the PBX refused our credentials ({exc.errcode} {exc.errmsg})"
        return PbxAnswer(CallStatus.FAILED, message, exc.errcode, exc.errmsg)
    except PbxError as exc:
        if exc.errcode in CHANNEL_GONE_ERRCODES:
            message = f"Gone: the PBX no longer has this call ({exc.errcode} {exc.errmsg})"
            return PbxAnswer(CallStatus.GONE, message, exc.errcode, exc.errmsg)
        message = f"Failed: the PBX answered {exc.errcode} {exc.errmsg}"
        return PbxAnswer(CallStatus.FAILED, message, exc.errcode, exc.errmsg)
    except PbxTransportError as exc:
        message = (
            f"Failed: no answer from the PBX in time ({exc.reason}); the PBX routes the call "
            "itself unless the request reached it"
            if exc.timed_out
            else f"Failed: {exc.reason}"
        )
        return PbxAnswer(CallStatus.FAILED, message, errmsg=exc.reason[:256])
    except PbxNotConfigured as exc:
        return PbxAnswer(CallStatus.FAILED, f"Failed: {exc}", errmsg=str(exc)[:256])
    if decision == Decision.ACCEPT:
        status, message = CallStatus.ACCEPTED, "Accepted: the PBX routed the call"
    else:
        status, message = CallStatus.REFUSED, "Refused: the PBX dropped the call"
    return PbxAnswer(status, message, 0, "SUCCESS", response.round_trip_ms)


def finish(call: Call, answer: PbxAnswer) -> DecideResult:
    """Record the PBX's answer to a claimed call."""
    call = _finish_decision(
        call, answer.status, answer.message, answer.errcode, answer.errmsg, answer.round_trip_ms
    )
    ok = answer.status in {CallStatus.ACCEPTED, CallStatus.REFUSED}
    return DecideResult(call, ok=ok, reason="" if ok else answer.message)


def _send_to_pbx(call: Call, decision: str, client: PbxClient | None) -> DecideResult:
    return finish(call, ask_pbx(call, decision, client))


def _finish_decision(
    call: Call,
    status: str,
    message: str,
    errcode: int | None,
    errmsg: str,
    round_trip_ms: float | None,
) -> Call:
    """Record the PBX's answer; returns the call as the database now holds it."""
    now = timezone.now()
    changes = {
        "status": status,
        "finished_at": now,
        "pbx_errcode": errcode,
        "pbx_errmsg": errmsg[:256],
        "pbx_round_trip_ms": round_trip_ms,
    }
    response = {
        "kind": AuditKind.PBX_RESPONSE,
        "message": f"{errcode if errcode is not None else '-'} {errmsg}".strip(),
        "at": now,
        "errcode": errcode,
        "errmsg": errmsg,
        "round_trip_ms": round_trip_ms,
    }
    with dbpriority.urgent(), transaction.atomic():
        done = _transition(call, changes, status=CallStatus.DECIDING)
        if done is None:
            # The sweeper gave up on this call while the PBX was answering; keep its verdict.
            current = _load(call.pk)
            _audit(current, **response)
            log.warning(
                "call %s finished after it was swept as %s", current.pbx_call_id, current.status
            )
            return current
        _record(
            _event(done, **response),
            _event(done, status, message, actor=done.decided_by, at=now),
        )
        if done.pbx_outcome:
            # The PBX's 30011 can overtake its answer to us: confirm it against the final record.
            # Our UPDATE above holds the row lock, so ``done`` is current.
            _settle_outcome(done, None, now, source="decision")
        transaction.on_commit(lambda: _push_loaded("call", done))
    if status == CallStatus.FAILED:
        log.error("decision on call %s failed: %s", done.pbx_call_id, message)
    return done


# --- Endings without a decision ------------------------------------------------------------


def expire(call: Call | int) -> bool:
    """Nobody decided in time: the PBX routes the call itself (fail-open is the PBX's rule).

    The expiry timer passes the call as stored at intake: when nothing changed since, it is
    expired and pushed without a reload (most calls on a busy trunk get here undecided)."""
    now = timezone.now()
    changes = {
        "status": CallStatus.EXPIRED,
        "decided_by_kind": DecidedBy.PBX_TIMEOUT,
        "finished_at": now,
    }
    with transaction.atomic():
        expired = _transition(call, changes, status=CallStatus.PENDING, deadline__lte=now)
        if expired is None:
            return False
        _audit(expired, AuditKind.EXPIRED, "Expired: PBX routed the call itself", at=now)
        transaction.on_commit(functools.partial(_push_loaded, "call", expired))
    return True


def sweep(now: datetime | None = None) -> int:
    """Finish calls whose expiry timer or deciding process died. Safe to run in every process."""
    now = now or timezone.now()
    count = 0
    due = Call.objects.filter(status=CallStatus.PENDING, deadline__lte=now - SWEEP_GRACE)
    for pk in due.values_list("pk", flat=True)[:500]:
        count += expire(pk)
    stuck = Call.objects.filter(
        status=CallStatus.DECIDING, deadline__lte=now - STUCK_DECISION_GRACE
    ).values_list("pk", flat=True)[:500]
    for pk in stuck:
        count += _give_up(pk, now)
    return count


def _give_up(call_pk: int, now: datetime) -> bool:
    changes = {"status": CallStatus.FAILED, "finished_at": now, "pbx_errmsg": "outcome unknown"}
    with transaction.atomic():
        failed = _transition(call_pk, changes, status=CallStatus.DECIDING)
        if failed is None:
            return False
        _audit(
            failed,
            AuditKind.FAILED,
            "Failed: the deciding process stopped before the PBX answered; outcome unknown",
            at=now,
        )
        transaction.on_commit(functools.partial(_push_loaded, "call", failed))
    return True


def _locked_calls(call_id: str) -> list[Call]:
    """Inside a transaction: the calls with this PBX call id (usually one), row-locked so a
    decision finishing in another thread cannot interleave, with what their push needs."""
    calls = Call.objects.select_related("trunk", "decided_by").select_for_update(of=("self",))
    return list(calls.filter(pbx_call_id=call_id))


def record_call_state(event: CallStateChanged) -> None:
    """30011: keep the PBX's view in the audit; a caller who hangs up while held is gone; what the
    PBX did with the call is confirmed against our record.

    Every accepted call brings two or three of these within a second of the decision, so this is
    one transaction, and the push reuses the locked, updated rows instead of reloading them."""
    now = timezone.now()
    with transaction.atomic():
        for call in _locked_calls(event.call_id):
            status = next(
                (m.member_status for m in event.members if m.channel_id == call.channel_id), None
            )
            observed = _outcome_from_state(call, event)
            events = [
                _event(
                    call,
                    AuditKind.PBX_STATE,
                    ", ".join(f"{m.kind} {m.member_status}" for m in event.members),
                    at=now,
                    members=[{"kind": m.kind, "status": m.member_status} for m in event.members],
                    pbx_outcome=observed or "",
                )
            ]
            changed = False
            if status == "BYE" and call.status == CallStatus.PENDING:
                gone = {
                    "status": CallStatus.GONE,
                    "decided_by_kind": DecidedBy.CALLER,
                    "finished_at": now,
                }
                if _transition(call, gone, status=CallStatus.PENDING) is not None:
                    events.append(
                        _event(call, AuditKind.GONE, "Gone: the caller hung up while held", at=now)
                    )
                    changed = True
            _record(*events)
            changed = _settle_outcome(call, observed, now, source="30011") or changed
            if changed:
                transaction.on_commit(functools.partial(_push_loaded, "call", call))


def record_cdr(event: CallDetailRecord) -> None:
    """30012: the PBX's call record, kept in the audit and used to confirm the outcome."""
    now = timezone.now()
    with transaction.atomic():
        for call in _locked_calls(event.call_id):
            observed = _outcome_from_cdr(call, event)
            _audit(
                call,
                AuditKind.PBX_CDR,
                f"CDR {event.status}, talk {event.talk_duration}s",
                at=now,
                status=event.status,
                call_duration=event.call_duration,
                talk_duration=event.talk_duration,
                did_number=event.did_number,
                pbx_outcome=observed,
            )
            if _settle_outcome(call, observed, now, source="30012"):
                transaction.on_commit(functools.partial(_push_loaded, "call", call))


# --- Outcome confirmation --------------------------------------------------------------------

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
    unconfirmed (pbx-api.md §11; the simulator guesses NO ANSWER, a PBX may say BUSY or FAILED),
    so any other status is read together with what we already know."""
    status = event.status.strip().upper()
    # "ANSWERD" is the EN doc table's spelling; voicemail picking up means the call was routed.
    if status.startswith("ANSWER") or status == "VOICEMAIL" or event.talk_duration > 0:
        return PbxOutcome.ANSWERED
    if call.pbx_outcome in {PbxOutcome.ROUTED, PbxOutcome.NO_ANSWER}:
        return PbxOutcome.NO_ANSWER
    if not call.pbx_outcome and call.status in {CallStatus.ACCEPTED, CallStatus.EXPIRED}:
        # No 30011 at all (Call Status not monitored on the trunk): an unanswered routed call and
        # a dropped one look alike here, so do not cry wolf.
        return PbxOutcome.NO_ANSWER
    return PbxOutcome.DROPPED


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


def _settle_outcome(call: Call, observed: str | None, now: datetime, *, source: str) -> bool:
    """Merge a PBX observation into the call (row locked by the caller's transaction) and set or
    clear the mismatch flag. Returns whether the call changed, so the caller pushes it once."""
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
        _audit(
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
        _audit(
            call,
            AuditKind.MISMATCH,
            f"Mismatch resolved: the PBX reports: {label}",
            at=now,
            status=call.status,
            pbx_outcome=outcome,
            source=source,
        )
    return True
