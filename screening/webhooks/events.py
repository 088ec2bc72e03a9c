"""Which outgoing event a state change makes, and what it says.

Every call event carries the call as the state change's transaction left it (``call_data``); the
fields are documented one by one in docs/webhooks.md, which must change with this module. The body
is ``{"id", "type", "created", "data"}``: ``id`` is new for every event (one event sent to three
endpoints has one id), so receivers deduplicate on it.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.translation import gettext_lazy as _

from screening.models import AuditKind, Call

CALL_RECEIVED = "call.received"
CALL_DECIDED = "call.decided"
CALL_EXPIRED = "call.expired"
CALL_GONE = "call.gone"
CALL_FAILED = "call.failed"
CALL_OUTCOME_CONFIRMED = "call.outcome_confirmed"
PBX_LINK_CHANGED = "pbx_link.changed"

# Every type an endpoint may subscribe to, with what admin shows for it.
EVENT_TYPES: dict[str, Any] = {
    CALL_RECEIVED: _("A call was offered by the PBX"),
    CALL_DECIDED: _("A call was accepted or refused (or its refusal reason recorded)"),
    CALL_EXPIRED: _("Nobody decided in time: the PBX routed the call itself"),
    CALL_GONE: _("The caller hung up while the call was held"),
    CALL_FAILED: _("The PBX did not carry out a decision"),
    CALL_OUTCOME_CONFIRMED: _("The PBX reported what became of a call"),
    PBX_LINK_CHANGED: _("The link to the PBX changed state"),
}

# The audit rows that make a call event. A refusal's reason is recorded just after the refusal
# (in its own transaction, screening.calls.reasons): it makes a second ``call.decided`` carrying
# the reason, so receivers get it without polling. ``call.outcome_confirmed`` has no audit row of
# its own (a confirmation that agrees with our record writes none): screening.calls.outcomes
# reports it through ``outbox.outcome_settled``.
KIND_TO_TYPE: dict[str, str] = {
    AuditKind.RECEIVED: CALL_RECEIVED,
    AuditKind.ACCEPTED: CALL_DECIDED,
    AuditKind.REFUSED: CALL_DECIDED,
    AuditKind.REASON: CALL_DECIDED,
    AuditKind.EXPIRED: CALL_EXPIRED,
    AuditKind.GONE: CALL_GONE,
    AuditKind.FAILED: CALL_FAILED,
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def decided_by(call: Call) -> dict[str, Any] | None:
    """Who or what decided: an operator (with username and name), a rule (with its id), the
    trunk's policy, the fallback policy, the PBX's window or the caller."""
    if not call.decided_by_kind:
        return None
    user = call.decided_by if call.decided_by_id else None
    return {
        "kind": call.decided_by_kind,
        "username": user.get_username() if user is not None else None,
        "name": (user.get_full_name() or user.get_username()) if user is not None else None,
        "rule_id": call.rule_id,
    }


def call_data(call: Call) -> dict[str, Any]:
    """The call as the current transaction holds it (docs/webhooks.md, "Call data")."""
    return {
        "call_id": call.pk,
        "pbx_call_id": call.pbx_call_id,
        "caller": call.caller,
        "caller_name": call.caller_name,
        "called": call.called,
        "trunk": call.trunk.name,
        "status": call.status,
        "decision": call.decision or None,
        "decided_by": decided_by(call),
        "reason": call.reason or None,
        "reason_note": call.reason_note or None,
        "received_at": _iso(call.received_at),
        "deadline": _iso(call.deadline),
        "claimed_at": _iso(call.claimed_at),
        "finished_at": _iso(call.finished_at),
        "pbx_errcode": call.pbx_errcode,
        "pbx_errmsg": call.pbx_errmsg or None,
        "pbx_outcome": call.pbx_outcome or None,
        "pbx_outcome_at": _iso(call.pbx_outcome_at),
        "outcome_mismatch": call.outcome_mismatch,
        "version": call.version,
    }


def link_data(value: dict[str, Any], previous: str | None) -> dict[str, Any]:
    """A link change: ``value`` as ``screening.pbx.link.describe`` gives it."""
    return {
        "state": value["state"],
        "previous_state": previous,
        "unscreened": value["unscreened"],
        "detail": value["detail"],
        "since": value["since"],
        "blocked_until": value["blocked_until"],
    }


def body(event_id: uuid.UUID, type_: str, created: datetime, data: dict[str, Any]) -> str:
    """The exact JSON sent and signed (compact, so it is stored as it goes out)."""
    envelope = {"id": str(event_id), "type": type_, "created": created.isoformat(), "data": data}
    return json.dumps(envelope, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)
