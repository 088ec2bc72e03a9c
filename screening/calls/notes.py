"""Notes per number: what the team knows about a caller ("courier expected, accept until 17:00").

A note is kept per number in the rules' form (``Call.caller_key``), so it shows on every later
card of that number whatever format the PBX sends it in: new calls read it at intake
(``screening.calls.context.notes_for``, newest first, expired ones left out), and calls of the
number already waiting get their card updated and pushed at once.

Any operator who may see the call, and any supervisor (from the call's page in the audit), may
add one. It is recorded as an audit row of kind ``note`` on the call it was written from.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from screening.calls import store
from screening.calls.access import may_decide
from screening.calls.context import notes_for
from screening.calls.memory import ActionError, number_of, optional_text
from screening.calls.payload import user_name
from screening.models import OPEN_STATUSES, AuditKind, Call, CallerNote

log = logging.getLogger("screening.calls.notes")

TEXT_CHARS = 500  # CallerNote.text
# A note that should hold longer than this is a contact's note or a rule; also keeps every
# date far from the calendar's end.
LONGEST_EXPIRY = timedelta(days=366)
VIEW_AUDIT = "screening.view_audit"
_CLOCK = re.compile(r"(?P<hour>[01]?\d|2[0-3]):(?P<minute>[0-5]\d)")
_REFRESH_TRIES = 3


def may_add(user: AbstractBaseUser, call: Call) -> bool:
    """Operators who may see the call, and supervisors (who see every call in the audit)."""
    return may_decide(user, call.trunk) or user.has_perm(VIEW_AUDIT)


def parse_expiry(value: Any, now: datetime) -> datetime | None:
    """``expires_at``: blank for never, ``HH:MM`` for today in the server's time zone, or an ISO
    8601 date and time (without an offset: the server's time zone). Must lie ahead."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ActionError(400, _("“expires_at” must be text: HH:MM or an ISO 8601 date and time."))
    value = value.strip()
    clock = _CLOCK.fullmatch(value)
    if clock:
        local = timezone.localtime(now)
        at = local.replace(
            hour=int(clock["hour"]), minute=int(clock["minute"]), second=0, microsecond=0
        )
        if at <= now:
            raise ActionError(
                400, _("%(time)s has already passed today; give a later time.") % {"time": value}
            )
        return at
    try:
        at = parse_datetime(value) if len(value) <= 40 else None
        if at is not None:
            if timezone.is_naive(at):
                at = timezone.make_aware(at)
            at = at.astimezone(UTC)  # an offset at the calendar's end overflows here
    except (ValueError, OverflowError):
        at = None
    if at is None:
        raise ActionError(
            400,
            _("“expires_at” %(value)r is not HH:MM or an ISO 8601 date and time.")
            % {"value": value[:40]},
        )
    if at <= now:
        raise ActionError(
            400, _("%(time)s has already passed; give a later time.") % {"time": value}
        )
    if at - now > LONGEST_EXPIRY:
        raise ActionError(
            400, _("A note may expire at most a year ahead; leave it blank for never.")
        )
    return at


def add_note(
    call_pk: int, user: AbstractBaseUser, data: dict[str, Any], *, now: datetime | None = None
) -> CallerNote:
    """Add a note about the number of call ``call_pk``; the number's waiting cards show it at
    once. Raises ``Call.DoesNotExist`` and ``ActionError``."""
    now = now or timezone.now()
    text = optional_text(data, "text", limit=TEXT_CHARS)
    if not text:
        raise ActionError(400, _("Write the note: “text” is empty."))
    expires_at = parse_expiry(data.get("expires_at"), now)
    call = store.load(call_pk)
    if not may_add(user, call):
        raise ActionError(403, _("This call's trunk is screened by another operator group."))
    number = number_of(call)
    with transaction.atomic():
        note = CallerNote.objects.create(
            number=number, text=text, author=user, created_at=now, expires_at=expires_at, call=call
        )
        until = f" (until {timezone.localtime(expires_at):%Y-%m-%d %H:%M})" if expires_at else ""
        store.audit(
            call,
            AuditKind.NOTE,
            f"{user_name(user)} noted: {text}{until}",
            actor=user,
            at=now,
            note_id=note.pk,
            number=number,
            expires_at=expires_at.isoformat() if expires_at else None,
        )
    refresh_open_cards(number, now)
    return note


def refresh_open_cards(number: str, now: datetime) -> int:
    """Give the waiting calls of ``number`` the number's current notes and push them; returns
    how many were updated. Each is its own short transaction, and only rewrites the card if
    nothing else changed the call since it was read (the version), so a concurrent update to
    another part of the card (a lookup's name) is never overwritten with a stale copy."""
    notes = notes_for(number, now)
    updated = 0
    calls = Call.objects.select_related("trunk", "decided_by").filter(
        caller_key=number, status__in=OPEN_STATUSES
    )
    for call in calls:
        current: Call | None = call
        for _attempt in range(_REFRESH_TRIES):
            if current is None or current.status not in OPEN_STATUSES:
                break
            context = {**(current.context or {}), "notes": notes}
            with transaction.atomic():
                done = store.transition(
                    current,
                    {"context": context},
                    status__in=OPEN_STATUSES,
                    version=current.version,
                )
                if done is not None:
                    store.send_call_on_commit(done)
            if done is not None:
                updated += 1
                break
            current = Call.objects.select_related("trunk", "decided_by").filter(pk=call.pk).first()
        else:
            log.warning("call %s: could not add the new note to its card", call.pbx_call_id)
    return updated


def notes_page(number: str, limit: int = 50) -> list[CallerNote]:
    """Every note of a number, expired ones too, newest first (the call's page in the audit)."""
    if not number:
        return []
    return list(
        CallerNote.objects.filter(number=number)
        .select_related("author", "call")
        .order_by("-created_at", "-id")[:limit]
    )
