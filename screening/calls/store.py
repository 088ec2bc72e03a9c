"""The write helpers every state change of a call uses: audit rows, the versioned update, and the
one place a call's push leaves from, after its transaction commits.

A browser must never see a state the database does not hold, so no module pushes a call itself:
each calls ``send_call_on_commit`` inside its transaction (as Zulip's ``send_event_on_commit``),
and the push goes out only if, and once, that transaction commits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from screening.calls import chain, push
from screening.calls.access import stream_for_trunk
from screening.calls.payload import call_payload
from screening.models import AuditEvent, Call


def event(
    call: Call | None,
    kind: str,
    message: str = "",
    *,
    actor: AbstractBaseUser | None = None,
    at: datetime | None = None,
    **detail: Any,
) -> AuditEvent:
    """An audit row, not yet saved (``record`` saves several in one INSERT). ``call`` is None for
    a row about the record itself (a retention run, an erasure)."""
    return AuditEvent(
        call=call,
        kind=kind,
        message=message[:512],
        actor=actor,
        at=at or timezone.now(),
        detail=detail,
    )


def audit(call: Call | None, kind: str, message: str = "", **fields: Any) -> AuditEvent:
    """One audit row, saved now (``fields``: those of ``event``)."""
    row = event(call, kind, message, **fields)
    record(row)
    return row


Observer = Callable[[Sequence[AuditEvent]], None]
_observers: list[Observer] = []


def observe(observer: Observer) -> None:
    """Have ``observer`` see every batch of audit rows ``record`` saves, inside the same
    transaction, right after the rows are written: the one hook for what follows from a state
    change (outgoing webhooks write their outbox rows here, metrics count after commit). An
    observer that raises rolls the state change back, so it must only fail when the change
    should not happen."""
    if observer not in _observers:
        _observers.append(observer)


def record(*events: AuditEvent) -> None:
    """Save audit rows in one statement, in order (ids ascend, so the trail reads in order),
    linked into the audit chain in the same transaction (``chain.append``: write them after the
    transaction's other shared writes, see its lock order), then show them to the observers."""
    chain.append(events)
    for observer in _observers:
        observer(events)


def load(call_pk: int) -> Call:
    """A call with what its push needs (trunk, decider)."""
    return Call.objects.select_related("trunk", "decided_by").get(pk=call_pk)


def transition(call: Call | int, changes: dict[str, Any], **where: Any) -> Call | None:
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
    return load(call)


def push_call(call: Call) -> int | None:
    """Push ``call`` to the operators who may see it; returns the push's sequence number, or
    None if it could not be sent (the browsers then resync: ``push.publish``)."""
    return push.publish("call", {"call": call_payload(call)}, stream=stream_for_trunk(call.trunk))


def send_call_on_commit(call: Call, then: Callable[[int], None] | None = None) -> None:
    """Push ``call`` once the current transaction commits, as that transaction left it.

    ``call`` must be what the database holds at commit (loaded or updated in place by
    ``transition``): no push reloads it. ``then`` gets the push's sequence number, and is not
    called when the push could not be sent.
    """

    def send() -> None:
        seq = push_call(call)
        if then is not None and seq is not None:
            then(seq)

    transaction.on_commit(send)
