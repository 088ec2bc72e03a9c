"""How calls look on the wire to browsers (pushes, snapshots and decide answers)."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.utils import translation

from screening.models import Call, CallStatus, DecidedBy

# The operator who refused a call may set or change its reason this long after the decision
# (screening.calls.reasons); the card learns until when from ``reason_editable_until``.
REASON_EDIT_WINDOW = timedelta(minutes=5)


def epoch_ms(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value else None


def user_name(user: AbstractBaseUser | None) -> str:
    if user is None:
        return ""
    full = user.get_full_name() if hasattr(user, "get_full_name") else ""
    return full or user.get_username()


def reason_editable_until(call: Call) -> datetime | None:
    """Until when the refusing operator may set the reason; None when there is nothing to edit
    (not refused, or not by a person)."""
    if call.status != CallStatus.REFUSED or call.decided_by_kind != DecidedBy.OPERATOR:
        return None
    decided = call.finished_at or call.claimed_at
    return decided + REASON_EDIT_WINDOW if decided else None


def call_payload(call: Call) -> dict[str, Any]:
    """Everything a browser needs to show and act on one call. ``call.trunk`` and
    ``call.decided_by`` should be loaded (select_related) to avoid queries.

    Its labels are in the default language whoever's request built it: one push goes to every
    operator, and each page shows the machine values (status, reason) in its own language."""
    if translation.get_language() == settings.LANGUAGE_CODE:
        return _payload(call)
    with translation.override(settings.LANGUAGE_CODE):
        return _payload(call)


@functools.cache
def _labels(field: str, language: str) -> dict[str, str]:
    """A choice field's labels in ``language``, built once: ``get_FOO_display`` rebuilds the
    whole choices dict on every call, and a payload is built for every push."""
    with translation.override(language):
        return {str(value): str(label) for value, label in Call._meta.get_field(field).flatchoices}


def _label(call: Call, field: str) -> str:
    value = getattr(call, field)
    return _labels(field, translation.get_language()).get(value, value)


def _payload(call: Call) -> dict[str, Any]:
    return {
        "id": call.pk,
        "call_id": call.pbx_call_id,
        "caller": call.caller,
        "called": call.called,
        "trunk": call.trunk.display_name,
        "trunk_name": call.trunk.name,
        "received_at": epoch_ms(call.received_at),
        "deadline": epoch_ms(call.deadline),
        "last_useful": epoch_ms(call.last_useful_moment()),
        "status": call.status,
        "status_label": _label(call, "status"),
        "version": call.version,
        "decision": call.decision,
        "decided_by": user_name(call.decided_by),
        "decided_by_kind": call.decided_by_kind,
        "pbx_errcode": call.pbx_errcode,
        "pbx_errmsg": call.pbx_errmsg,
        "pbx_round_trip_ms": call.pbx_round_trip_ms,
        "pbx_outcome": call.pbx_outcome,
        "outcome_mismatch": call.outcome_mismatch,
        "history": call.history,
        "caller_name": call.caller_name,
        "context": call.context,
        "reason": call.reason,
        "reason_label": _label(call, "reason") if call.reason else "",
        "reason_note": call.reason_note,
        "reason_editable_until": epoch_ms(reason_editable_until(call)),
        # Empty for a withheld number: nothing to note or block it under.
        "caller_key": call.caller_key,
    }
