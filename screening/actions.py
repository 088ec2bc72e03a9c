"""Every state change of a call lives here.

Each function writes the call row and its audit rows in one transaction and pushes to operators only
after that transaction commits, so a browser never sees a state the database does not hold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from screening import push
from screening.access import stream_for_trunk
from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallStatus,
    DecidedBy,
    Decision,
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


def _audit(
    call: Call,
    kind: str,
    message: str = "",
    *,
    actor: AbstractBaseUser | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> AuditEvent:
    return AuditEvent.objects.create(
        call=call,
        kind=kind,
        message=message[:512],
        actor=actor,
        at=at or timezone.now(),
        detail=detail,
    )


def _load(call_pk: int) -> Call:
    return Call.objects.select_related("trunk", "decided_by").get(pk=call_pk)


def _push_call(kind: str, call_pk: int) -> int:
    """After commit: push the call as the database now holds it, to those who may see it."""
    call = _load(call_pk)
    return push.publish(kind, {"call": call_payload(call)}, stream=stream_for_trunk(call.trunk))


# --- Intake ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    call: Call
    created: bool
    # The trunk does not screen: the caller should route the call at once with decide(...,
    # by_kind=TRUNK_POLICY). Left to the caller so intake never waits on the PBX.
    accept_now: bool = False


def receive_call(event: IncomingCall, *, via: str, received_at: datetime | None = None) -> Received:
    """Record a 30016. Idempotent on the PBX's call and channel ids (webhooks are retried)."""
    now = received_at or timezone.now()
    with transaction.atomic():
        existing = _existing_call(event)
        if existing is not None:
            _audit(existing, AuditKind.DUPLICATE, f"Duplicate 30016 via {via} ignored", via=via)
            return Received(existing, created=False)
        trunk, trunk_created = Trunk.objects.get_or_create(
            name=event.trunk_name, defaults={"label": event.trunk_name, "auto_created": True}
        )
        try:
            with transaction.atomic():
                call = Call.objects.create(
                    pbx_call_id=event.call_id,
                    channel_id=event.channel_id,
                    pbx_sn=event.sn,
                    caller=event.caller,
                    called=event.called,
                    trunk=trunk,
                    received_at=now,
                    deadline=now + timedelta(seconds=settings.SCREEN_WINDOW_SECONDS),
                    history=caller_history(event.caller, now),
                )
        except IntegrityError:
            # Another process stored the same delivery between our check and our insert.
            existing = _existing_call(event)
            assert existing is not None
            return Received(existing, created=False)
        _audit(
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
        if trunk_created:
            log.warning(
                "call %s arrived on unknown trunk %r: created it", event.call_id, trunk.name
            )
            _audit(call, AuditKind.TRUNK_CREATED, f"Unknown trunk {trunk.name!r} created")
        if trunk.screening_enabled:
            transaction.on_commit(lambda: _announce(call.pk))
    return Received(call, created=True, accept_now=not trunk.screening_enabled)


def _existing_call(event: IncomingCall) -> Call | None:
    return Call.objects.filter(pbx_call_id=event.call_id, channel_id=event.channel_id).first()


def _announce(call_pk: int) -> None:
    seq = _push_call("call", call_pk)
    call = Call.objects.select_related("trunk").get(pk=call_pk)
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
    call_pk: int,
    decision: str,
    *,
    user: AbstractBaseUser | None = None,
    by_kind: str = DecidedBy.OPERATOR,
    client: PbxClient | None = None,
) -> DecideResult:
    """Claim the call (exactly one claimant wins), send the decision to the PBX, record the result.

    Raises ``Call.DoesNotExist`` for an unknown call.
    """
    if decision not in Decision.values:
        raise ValueError(f"unknown decision {decision!r}")
    claimed = _claim(call_pk, decision, user, by_kind)
    if claimed is None:
        call = _load(call_pk)
        return DecideResult(call, ok=False, conflict=True, reason=_conflict_reason(call))
    return _send_to_pbx(claimed, decision, client)


def _claim(call_pk: int, decision: str, user: AbstractBaseUser | None, by_kind: str) -> Call | None:
    now = timezone.now()
    margin = timedelta(seconds=settings.SCREEN_SAFETY_MARGIN_SECONDS)
    endpoint = _endpoint(decision)
    with transaction.atomic():
        won = Call.objects.filter(
            pk=call_pk, status=CallStatus.PENDING, deadline__gt=now + margin
        ).update(
            status=CallStatus.DECIDING,
            decision=decision,
            decided_by=user,
            decided_by_kind=by_kind,
            claimed_at=now,
            version=F("version") + 1,
        )
        if not won:
            return None
        call = _load(call_pk)
        who = user_name(user) or call.get_decided_by_kind_display()
        _audit(call, AuditKind.CLAIMED, f"{who} decided to {decision}", actor=user, at=now)
        # Saved before the request goes out (a crash after this line leaves a visible trace).
        _audit(
            call,
            AuditKind.PBX_REQUEST,
            f"POST {endpoint}",
            actor=user,
            endpoint=endpoint,
            channel_id=call.channel_id,
        )
        transaction.on_commit(lambda: _push_call("call", call_pk))
    return call


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


def _send_to_pbx(call: Call, decision: str, client: PbxClient | None) -> DecideResult:
    # The PBX's own cut-off: an answer later than this is worthless, the call is already routed.
    deadline = call.deadline.timestamp()
    errcode: int | None = None
    errmsg = ""
    round_trip_ms: float | None = None
    try:
        pbx = client or PbxClient.from_settings()
        send = pbx.accept_inbound if decision == Decision.ACCEPT else pbx.refuse_inbound
        response = send(call.channel_id, deadline=deadline)
        errcode, errmsg, round_trip_ms = 0, "SUCCESS", response.round_trip_ms
        status = CallStatus.ACCEPTED if decision == Decision.ACCEPT else CallStatus.REFUSED
        message = (
            "Accepted: the PBX routed the call"
            if status == CallStatus.ACCEPTED
            else ("Refused: the PBX dropped the call")
        )
    except PbxAuthError as exc:
        status, errcode, errmsg = CallStatus.FAILED, exc.errcode, exc.errmsg
        message = f"Failed: the PBX refused our credentials ({exc.errcode} {exc.errmsg})"
    except PbxError as exc:
        errcode, errmsg = exc.errcode, exc.errmsg
        if exc.errcode in CHANNEL_GONE_ERRCODES:
            status = CallStatus.GONE
            message = f"Gone: the PBX no longer has this call ({exc.errcode} {exc.errmsg})"
        else:
            status = CallStatus.FAILED
            message = f"Failed: the PBX answered {exc.errcode} {exc.errmsg}"
    except PbxTransportError as exc:
        status, errmsg = CallStatus.FAILED, exc.reason[:256]
        message = (
            f"Failed: no answer from the PBX in time ({exc.reason}); the PBX routes the call "
            "itself unless the request reached it"
            if exc.timed_out
            else f"Failed: {exc.reason}"
        )
    except PbxNotConfigured as exc:
        status, errmsg = CallStatus.FAILED, str(exc)[:256]
        message = f"Failed: {exc}"
    _finish_decision(call.pk, status, message, errcode, errmsg, round_trip_ms)
    call = _load(call.pk)
    ok = status in {CallStatus.ACCEPTED, CallStatus.REFUSED}
    return DecideResult(call, ok=ok, reason="" if ok else message)


def _finish_decision(
    call_pk: int,
    status: str,
    message: str,
    errcode: int | None,
    errmsg: str,
    round_trip_ms: float | None,
) -> None:
    now = timezone.now()
    with transaction.atomic():
        done = Call.objects.filter(pk=call_pk, status=CallStatus.DECIDING).update(
            status=status,
            finished_at=now,
            pbx_errcode=errcode,
            pbx_errmsg=errmsg[:256],
            pbx_round_trip_ms=round_trip_ms,
            version=F("version") + 1,
        )
        call = _load(call_pk)
        _audit(
            call,
            AuditKind.PBX_RESPONSE,
            f"{errcode if errcode is not None else '-'} {errmsg}".strip(),
            at=now,
            errcode=errcode,
            errmsg=errmsg,
            round_trip_ms=round_trip_ms,
        )
        if not done:
            # The sweeper gave up on this call while the PBX was answering; keep its verdict.
            log.warning("call %s finished after it was swept as %s", call.pbx_call_id, call.status)
            return
        _audit(call, status, message, actor=call.decided_by, at=now)
        transaction.on_commit(lambda: _push_call("call", call_pk))
    if status == CallStatus.FAILED:
        log.error("decision on call %s failed: %s", call.pbx_call_id, message)


# --- Endings without a decision ------------------------------------------------------------


def expire(call_pk: int) -> bool:
    """Nobody decided in time: the PBX routes the call itself (fail-open is the PBX's rule)."""
    now = timezone.now()
    with transaction.atomic():
        done = Call.objects.filter(pk=call_pk, status=CallStatus.PENDING, deadline__lte=now).update(
            status=CallStatus.EXPIRED,
            decided_by_kind=DecidedBy.PBX_TIMEOUT,
            finished_at=now,
            version=F("version") + 1,
        )
        if done:
            call = _load(call_pk)
            _audit(call, AuditKind.EXPIRED, "Expired: PBX routed the call itself", at=now)
            transaction.on_commit(lambda: _push_call("call", call_pk))
    return bool(done)


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
    with transaction.atomic():
        done = Call.objects.filter(pk=call_pk, status=CallStatus.DECIDING).update(
            status=CallStatus.FAILED,
            finished_at=now,
            pbx_errmsg="outcome unknown",
            version=F("version") + 1,
        )
        if done:
            call = _load(call_pk)
            _audit(
                call,
                AuditKind.FAILED,
                "Failed: the deciding process stopped before the PBX answered; outcome unknown",
                at=now,
            )
            transaction.on_commit(lambda: _push_call("call", call_pk))
    return bool(done)


def record_call_state(event: CallStateChanged) -> None:
    """30011: keep the PBX's view in the audit; a caller who hangs up while held is gone."""
    calls = list(Call.objects.filter(pbx_call_id=event.call_id).only("pk", "status", "channel_id"))
    if not calls:
        return
    states = {m.channel_id: m.member_status for m in event.members}
    now = timezone.now()
    for call in calls:
        status = states.get(call.channel_id)
        with transaction.atomic():
            _audit(
                call,
                AuditKind.PBX_STATE,
                ", ".join(f"{m.kind} {m.member_status}" for m in event.members),
                at=now,
                members=[{"kind": m.kind, "status": m.member_status} for m in event.members],
            )
            if status == "BYE" and call.status == CallStatus.PENDING:
                hung_up = Call.objects.filter(pk=call.pk, status=CallStatus.PENDING).update(
                    status=CallStatus.GONE,
                    decided_by_kind=DecidedBy.CALLER,
                    finished_at=now,
                    version=F("version") + 1,
                )
                if hung_up:
                    _audit(call, AuditKind.GONE, "Gone: the caller hung up while held", at=now)
                    pk = call.pk
                    transaction.on_commit(lambda pk=pk: _push_call("call", pk))


def record_cdr(event: CallDetailRecord) -> None:
    """30012: the PBX's call record, kept in the audit for outcome confirmation."""
    for call in Call.objects.filter(pbx_call_id=event.call_id).only("pk"):
        _audit(
            call,
            AuditKind.PBX_CDR,
            f"CDR {event.status}, talk {event.talk_duration}s",
            status=event.status,
            call_duration=event.call_duration,
            talk_duration=event.talk_duration,
            did_number=event.did_number,
        )
