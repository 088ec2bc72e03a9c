"""Calls that end without a decision: expired at the deadline (the PBX routed the call itself,
fail-open being the PBX's rule), and the sweeper that finishes what a dead process left open.

The process that received a call arms its expiry timer (``schedule_expiry``); every process runs
the sweeper (``screening.startup``), which catches calls whose timer or deciding process died.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from screening.calls import store
from screening.models import AuditKind, Call, CallStatus, DecidedBy
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
        failed = store.transition(call_pk, changes, status=CallStatus.DECIDING)
        if failed is None:
            return False
        store.audit(
            failed,
            AuditKind.FAILED,
            "Failed: the deciding process stopped before the PBX answered; outcome unknown",
            at=now,
        )
        store.send_call_on_commit(failed)
    return True
