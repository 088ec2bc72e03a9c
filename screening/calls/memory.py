"""What the team leaves behind on a call for the next one: the shared parts of notes
(``screening.calls.notes``), refusal reasons (``screening.calls.reasons``) and follow-up rules
(``screening.calls.followup``).

Each of those actions checks everything it was sent before it writes anything, and answers a bad
request with an ``ActionError`` (an HTTP status and a sentence for the operator), so the views
stay thin and a bad value never reaches the database.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from django.utils.translation import gettext as _

from screening.models import Call, CallStatus, RefusalReason


class ActionError(Exception):
    """A request the action refuses: ``status`` is the HTTP status, ``message`` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def optional_text(data: dict[str, Any], name: str, *, limit: int) -> str:
    """A free-text field: absent or blank gives ``""``; trimmed; at most ``limit`` characters;
    no control characters (a note is one line on a card) and nothing the database cannot store."""
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ActionError(400, _("“%(name)s” must be text.") % {"name": name})
    value = value.strip()
    if len(value) > limit:
        raise ActionError(
            400,
            _("“%(name)s” is too long: at most %(limit)s characters.")
            % {"name": name, "limit": limit},
        )
    if any(unicodedata.category(ch) in {"Cc", "Cs"} for ch in value):
        raise ActionError(400, _("“%(name)s” may not contain control characters.") % {"name": name})
    return value


def choice(data: dict[str, Any], name: str, choices: dict[str, str]) -> str:
    """A field that must be one of ``choices`` (value → label), or absent/blank (``""``)."""
    value = data.get(name)
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or value not in choices:
        shown = repr(value)[:40]
        allowed = ", ".join(choices)
        raise ActionError(
            400,
            _("Unknown %(name)s %(value)s: use one of %(allowed)s.")
            % {"name": name, "value": shown, "allowed": allowed},
        )
    return value


REASONS: dict[str, str] = dict(RefusalReason.choices)


def reason_field(data: dict[str, Any]) -> str:
    return choice(data, "reason", REASONS)


def number_of(call: Call) -> str:
    """The call's number as notes and rules key it; a withheld number has none."""
    if not call.caller_key:
        raise ActionError(400, _("The number was withheld: there is no number to remember."))
    return call.caller_key


def is_open(call: Call) -> bool:
    return call.status in {CallStatus.PENDING, CallStatus.DECIDING}
