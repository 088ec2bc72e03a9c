"""What the card shows beside the number: who is calling, what the team noted about the number,
and what it did with it before.

``card_context`` runs at intake, before the call is stored, and reads only what the database
already holds (never an external lookup: those come later, ``screening.calls.lookups``). The
result is stored on the call (``Call.context``), so every push and snapshot of it needs no query.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model

from screening.calls import precedent, sql
from screening.calls.payload import epoch_ms, user_name
from screening.models import CallerNote, Contact, ContactNumber

NOTES_ON_CARD = 5  # newest first; older ones are on the call's page in the audit


def contact_for(number: str) -> dict[str, Any] | None:
    """The contact holding ``number`` (normalised), as the card shows it; manual entries first,
    then imported, PBX and looked-up ones, then the oldest."""
    if not number:
        return None
    rows = sql.fetch(_contact_sql(), [number])
    if not rows:
        return None
    pk, name, organisation, source, note = min(
        rows, key=lambda r: (_SOURCE_ORDER.get(r[3], 9), r[0])
    )
    return {
        "id": pk,
        "name": name,
        "organisation": organisation,
        "source": source,
        "note": note[:500],
    }


@functools.cache
def _contact_sql() -> str:
    # A fixed statement (screening.calls.sql): this runs at intake for every call.
    contact, number = sql.table(Contact), sql.table(ContactNumber)
    return (
        f"SELECT c.id, c.name, c.organisation, c.source, c.note FROM {number} n "  # noqa: S608
        f"JOIN {contact} c ON c.id = n.{sql.column(ContactNumber, 'contact')} "
        f"WHERE n.{sql.column(ContactNumber, 'normalised')} = %s "
        "ORDER BY c.source, c.id LIMIT 10"
    )


_SOURCE_ORDER = {"manual": 0, "import": 1, "pbx": 2, "lookup": 3}


def note_payload(note: CallerNote) -> dict[str, Any]:
    return _note(note.pk, note.text, user_name(note.author), note.created_at, note.expires_at)


def _note(
    pk: int, text: str, author: str, created: datetime | None, expires: datetime | None
) -> dict[str, Any]:
    """How a note looks on the card, however it was read."""
    return {
        "id": pk,
        "text": text,
        "author": author,
        "at": epoch_ms(created),
        "expires_at": epoch_ms(expires),
    }


def notes_for(number: str, now: datetime, limit: int = NOTES_ON_CARD) -> list[dict[str, Any]]:
    """The number's notes still in force, newest first (index ``note_number_recent``)."""
    if not number:
        return []
    rows = sql.fetch(_notes_sql(), [number, sql.param(now), limit])
    return [
        _note(
            pk,
            text,
            _author_name(author_id, first, last, username),
            sql.to_datetime(created),
            sql.to_datetime(expires),
        )
        for pk, text, created, expires, author_id, first, last, username in rows
    ]


def _author_name(pk: int | None, first: str, last: str, username: str) -> str:
    if pk is None:
        return ""
    return user_name(get_user_model()(pk=pk, first_name=first, last_name=last, username=username))


@functools.cache
def _notes_sql() -> str:
    # A fixed statement (screening.calls.sql), as note_payload shows a note: this runs at intake.
    notes, users = sql.table(CallerNote), sql.table(get_user_model())
    expires = f"n.{sql.column(CallerNote, 'expires_at')}"
    created = f"n.{sql.column(CallerNote, 'created_at')}"
    return (
        f"SELECT n.id, n.{sql.column(CallerNote, 'text')}, {created}, {expires}, u.id, "  # noqa: S608
        f"u.first_name, u.last_name, u.username FROM {notes} n "
        f"LEFT JOIN {users} u ON u.id = n.{sql.column(CallerNote, 'author')} "
        f"WHERE n.{sql.column(CallerNote, 'number')} = %s "
        f"AND ({expires} IS NULL OR {expires} > %s) "
        f"ORDER BY {created} DESC, n.id DESC LIMIT %s"
    )


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
