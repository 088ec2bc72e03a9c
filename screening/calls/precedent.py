"""What the team did with a number before (``CallerPrecedent``, one row per number)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from screening.models import CallerPrecedent


def card_summary(number: str, now: datetime) -> dict[str, Any] | None:
    """The card's precedent line for ``number`` (normalised), or None when nobody decided it."""
    row = CallerPrecedent.objects.filter(number=number).first()
    if row is None:
        return None
    decided = row.people_accepted + row.people_refused
    return {
        "decided": decided,
        "refused": row.people_refused,
        "operators": len(row.operators),
        "auto_decided": row.auto_accepted + row.auto_refused,
        "auto_refused": row.auto_refused,
        "last": row.last or None,
    }
