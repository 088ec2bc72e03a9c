"""Calls that end without a decision: expired at the deadline (the PBX routed the call itself,
fail-open being the PBX's rule), ended by what the PBX reports about them, and the sweeper that
finishes what a dead process left open.

The process that received a call arms its expiry timer (``schedule_expiry``); every process runs
the sweeper (``screening.startup``), which catches calls whose timer or deciding process died.

Our deadline is only our estimate of the PBX's: it starts when the 30016 reaches us, so a late
webhook delivery (or a process that died with the timer) leaves a call pending after the PBX has
already routed it. The PBX's own reports then decide (``end_by_pbx_report``): a call nobody
decided that the PBX routed is *expired*, one that ended before the PBX routed it is *gone*.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from screening.calls import store
from screening.models import AuditEvent, AuditKind, Call, CallStatus, DecidedBy, PbxOutcome
from screening.reports.rollup import reopen_hour
from screening.runtime import run_blocking, spawn

# A DECIDING call this long past its deadline lost its deciding process; nothing will finish it.
STUCK_DECISION_GRACE = timedelta(seconds=30)
# Timers fire at the deadline; the sweeper only catches calls whose timer died with its process.
SWEEP_GRACE = timedelta(seconds=2)


def schedule_expiry(call: Call) -> None:
    """Expire the call at its deadline, from this process (the sweeper covers a dead process).
    The timer holds the call as stored at intake, so an undecided call expires without a reload."""
    loop = asyncio.get_running_loop()
    delay = max(0.0, call.deadline.timestamp() - time.time())
    loop.call_later(delay, lambda: spawn(run_blocking(expire, call), f"expire-{call.pk}"))


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
        expired = store.transition(call, changes, status=CallStatus.PENDING, deadline__lte=now)
        if expired is None:
            return False
        store.audit(expired, AuditKind.EXPIRED, "Expired: PBX routed the call itself", at=now)
        store.send_call_on_commit(expired)
    return True


def end_by_pbx_report(
    call: Call, *, routed: bool, ended: bool, now: datetime, source: str, report: str
) -> AuditEvent | None:
    """Inside the caller's transaction, the row locked: end a call nobody decided as the PBX
    reports it. ``routed``: the PBX sent the call on (an extension rang or answered, the trunk
    answered, or its call record says so); ``ended``: the call is over. Returns the audit row to
    save (not yet saved), or None when nothing changes.

    Pending: routed → expired (the PBX's window passed before ours); ended without routing → gone
    (the caller hung up in the hold). Gone because of an earlier report, when a later one shows the
    PBX had routed it (reports arriving out of order) → expired: a status read from the PBX's
    reports yields to a stronger report, while anything decided (accepted, refused, failed, an
    expiry at our deadline, a decision in flight) stays as recorded. ``source`` and ``report`` say
    which PBX report decided it, for the audit trail."""
    what = f"{source}: {report}"
    if call.status == CallStatus.PENDING and routed:
        where: dict[str, str] = {"status": CallStatus.PENDING}
        message = f"Expired: the PBX routed the call itself after its window ({what})"
    elif call.status == CallStatus.PENDING and ended:
        where = {"status": CallStatus.PENDING}
        message = f"Gone: the caller hung up while held ({what})"
    elif call.status == CallStatus.GONE and call.decided_by_kind == DecidedBy.CALLER and routed:
        where = {"status": CallStatus.GONE, "decided_by_kind": DecidedBy.CALLER}
        message = (
            f"Expired: the PBX routed the call itself after its window ({what}); "
            "an earlier report had it ending in the hold"
        )
    else:
        return None
    was = call.status
    if routed:
        changes = {
            "status": CallStatus.EXPIRED,
            "decided_by_kind": DecidedBy.PBX_TIMEOUT,
            "finished_at": call.finished_at or now,
        }
        kind = AuditKind.EXPIRED
    else:
        changes = {
            "status": CallStatus.GONE,
            "decided_by_kind": DecidedBy.CALLER,
            "finished_at": now,
        }
        kind = AuditKind.GONE
    if store.transition(call, changes, **where) is None:
        return None
    if was != CallStatus.PENDING:
        # A finished call changed its outcome: the statistics' roll-up of its hour is stale.
        reopen_hour(call.received_at)
    return store.event(call, kind, message, at=now, source=source, report=report, was=was)


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
    """A decision whose process died before the PBX answered it: failed, as nobody knows whether
    the request reached the PBX. What the PBX's own reports (30011/30012) already say happened to
    the call is named in the record, so a supervisor does not read "unknown" where it is known."""
    with transaction.atomic():
        stuck = (
            Call.objects.select_related("trunk", "decided_by")
            .select_for_update(of=("self",))
            .filter(pk=call_pk, status=CallStatus.DECIDING)
            .first()
        )
        if stuck is None:
            return False
        message = "Failed: the deciding process stopped before the PBX answered"
        errmsg = "outcome unknown"
        if stuck.pbx_outcome:
            reported = PbxOutcome(stuck.pbx_outcome).label.lower()
            message += f"; the PBX's own reports show the call: {reported}"
            errmsg = f"no answer to our request; PBX reports: {reported}"
        else:
            message += "; outcome unknown"
        changes = {"status": CallStatus.FAILED, "finished_at": now, "pbx_errmsg": errmsg}
        failed = store.transition(stuck, changes, status=CallStatus.DECIDING)
        if failed is None:
            return False
        store.audit(failed, AuditKind.FAILED, message, at=now, pbx_outcome=failed.pbx_outcome)
        store.send_call_on_commit(failed)
    return True
