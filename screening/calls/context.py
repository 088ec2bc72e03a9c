"""What the card shows beside the number: who is calling, what the team noted about the number,
and what it did with it before.

``card_context`` runs at intake, before the call is stored, and reads only what the database
already holds (never an external lookup: those come later, ``screening.calls.lookups``). The
result is stored on the call (``Call.context``), so every push and snapshot of it needs no query.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Q

from screening.calls import precedent
from screening.calls.payload import epoch_ms, user_name
from screening.models import CallerNote, ContactNumber

NOTES_ON_CARD = 5  # newest first; older ones are on the call's page in the audit


def contact_for(number: str) -> dict[str, Any] | None:
    """The contact holding ``number`` (normalised), as the card shows it; manual entries first,
    then imported, PBX and looked-up ones, then the oldest."""
    if not number:
        return None
    rows = (
        ContactNumber.objects.filter(normalised=number)
        .select_related("contact")
        .order_by("contact__source", "contact_id")[:10]
    )
    found = sorted(rows, key=lambda row: (_SOURCE_ORDER.get(row.contact.source, 9), row.contact_id))
    if not found:
        return None
    contact = found[0].contact
    return {
        "id": contact.pk,
        "name": contact.name,
        "organisation": contact.organisation,
        "source": contact.source,
        "note": contact.note[:500],
    }


_SOURCE_ORDER = {"manual": 0, "import": 1, "pbx": 2, "lookup": 3}


def note_payload(note: CallerNote) -> dict[str, Any]:
    return {
        "id": note.pk,
        "text": note.text,
        "author": user_name(note.author),
        "at": epoch_ms(note.created_at),
        "expires_at": epoch_ms(note.expires_at),
    }


def notes_for(number: str, now: datetime, limit: int = NOTES_ON_CARD) -> list[dict[str, Any]]:
    """The number's notes still in force, newest first (index ``note_number_recent``)."""
    if not number:
        return []
    notes = (
        CallerNote.objects.filter(number=number)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .select_related("author")
        .order_by("-created_at", "-id")[:limit]
    )
    return [note_payload(note) for note in notes]


def card_context(number: str, now: datetime) -> dict[str, Any]:
    """Everything the database knows about ``number`` (normalised) for a new call's card."""
    contact = contact_for(number)
    summary = precedent.card_summary(number, now) if number else None
    return {
        "contact": contact,
        "notes": notes_for(number, now),
        "precedent": summary,
        # Shown only: nothing is decided from it (docs/precedent.md, "The suggestion").
        "suggestion": precedent.suggestion(summary),
    }
