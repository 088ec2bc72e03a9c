"""Why an operator refused a call: a reason code (``RefusalReason``) and an optional note.

The reason never delays the PBX request. It comes with the refusal (``POST /calls/<id>/refuse``
with ``reason`` and ``note``) or just after it (``R`` then ``1`` to ``4`` on the dashboard,
``POST /calls/<id>/reason``), and either way it is written after the decision has been carried
out, in a short transaction of its own: the call's ``reason`` fields, an audit row of kind
``reason`` (one per change: the audit is append-only), and a push so every card shows it.

The operator who refused the call may set or change its reason for ``REASON_EDIT_WINDOW`` after
the decision; nobody else may.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from screening.calls import precedent, store
from screening.calls.access import may_decide
from screening.calls.memory import REASONS, ActionError, optional_text, reason_field
from screening.calls.payload import REASON_EDIT_WINDOW, reason_editable_until, user_name
from screening.models import AuditKind, Call, CallStatus, Decision

NOTE_CHARS = 500  # Call.reason_note


def parse(decision: str, data: dict[str, Any]) -> tuple[str, str]:
    """The ``reason`` and ``note`` sent with a decision, checked before anything is claimed, so
    a bad value decides nothing. Only a refusal has a reason; a note needs a reason."""
    reason = reason_field(data)
    note = optional_text(data, "note", limit=NOTE_CHARS)
    if decision != Decision.REFUSE and (reason or note):
        raise ActionError(400, _("Only a refusal has a reason: send reason and note with refuse."))
    if note and not reason:
        raise ActionError(
            400,
            _("A note goes with a reason: one of %(reasons)s.") % {"reasons": ", ".join(REASONS)},
        )
    return reason, note


def record(call: Call, reason: str, note: str, *, now: datetime | None = None) -> Call:
    """After a refusal was carried out: the reason it was sent with. The caller checked that
    ``call`` is refused by an operator (``call.decided_by``)."""
    return _write(call, call.decided_by, reason, note, now or timezone.now())


def set_reason(
    call_pk: int, user: AbstractBaseUser, data: dict[str, Any], *, now: datetime | None = None
) -> Call:
    """``POST /calls/<id>/reason``: set or change the reason of a call ``user`` refused."""
    reason = reason_field(data)
    if not reason:
        raise ActionError(
            400, _("Say which reason: one of %(reasons)s.") % {"reasons": ", ".join(REASONS)}
        )
    note = optional_text(data, "note", limit=NOTE_CHARS)
    call = store.load(call_pk)
    if not may_decide(user, call.trunk):
        raise ActionError(403, _("This call's trunk is screened by another operator group."))
    if call.status != CallStatus.REFUSED:
        raise ActionError(
            400,
            _("Only a refused call has a reason; this one is %(status)s.")
            % {"status": call.status},
        )
    until = reason_editable_until(call)
    if call.decided_by_id != user.pk or until is None:
        who = user_name(call.decided_by) or call.get_decided_by_kind_display()
        raise ActionError(
            403, _("Only the operator who refused the call (%(who)s) may say why.") % {"who": who}
        )
    now = now or timezone.now()
    if now > until:
        minutes = int(REASON_EDIT_WINDOW.total_seconds() // 60)
        raise ActionError(
            409,
            _("Too late: a reason can be set only within %(minutes)s minutes of the refusal.")
            % {"minutes": minutes},
        )
    return _write(call, user, reason, note, now)


def _write(
    call: Call, user: AbstractBaseUser | None, reason: str, note: str, now: datetime
) -> Call:
    before = call.reason
    changes = {"reason": reason, "reason_note": note, "reason_at": now}
    with transaction.atomic():
        updated = store.transition(call, changes, status=CallStatus.REFUSED, decided_by=user)
        if updated is None:  # only if the row changed hands in between, which a refusal never does
            raise ActionError(409, _("This call is no longer refused by you."))
        label = REASONS[reason]
        verb = f"changed the reason from {REASONS[before].lower()} to" if before else "refused as"
        message = f"{user_name(user)} {verb} {label.lower()}" + (f": {note}" if note else "")
        store.audit(
            updated,
            AuditKind.REASON,
            message,
            actor=user,
            at=now,
            reason=reason,
            note=note,
            previous=before,
        )
        precedent.reason_recorded(updated)  # the card's "last: spam, by …" of the next call
        store.send_call_on_commit(updated)
    return updated
