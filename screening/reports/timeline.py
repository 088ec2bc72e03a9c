"""A call's whole story from the append-only audit table, with times relative to its arrival."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy as _

from screening.calls.payload import user_name
from screening.models import AuditEvent, AuditKind, Call
from screening.reports.audit import AuditRow, Ordering, ordered, query_rows


class TimelineForm(forms.Form):
    """A timeline's query parameters (screening.reports.params): where "← Audit log" goes back
    to, the list's own query string."""

    back = forms.CharField(required=False, max_length=2048, strip=False)


# Kinds a supervisor should notice at a glance (styled as warnings on the page).
ALERT_KINDS = {AuditKind.FAILED, AuditKind.MISMATCH, AuditKind.EXPIRED}
# Detail keys shown first and by name; the rest follow in stored order.
DETAIL_LABELS = {
    "errcode": "errcode",  # the PBX's own field names, as its documentation spells them
    "errmsg": "errmsg",
    "round_trip_ms": _("round trip (ms)"),
    "endpoint": _("endpoint"),
    "via": _("via"),
    "stream": _("stream"),
}


@dataclass
class Step:
    at: datetime
    offset_ms: int
    kind: str
    kind_label: str
    actor: str
    message: str
    detail: list[tuple[str, str]]
    alert: bool


def call_row(pk: int) -> AuditRow | None:
    return next(query_rows(ordered(Call.objects.filter(pk=pk), Ordering.parse(None)), 1), None)


def timeline(call_pk: int, received_at: datetime) -> list[Step]:
    events: QuerySet[AuditEvent] = (
        AuditEvent.objects.filter(call_id=call_pk).select_related("actor").order_by("at", "id")
    )
    labels = dict(AuditKind.choices)
    return [
        Step(
            at=e.at,
            offset_ms=round((e.at - received_at) / timedelta(milliseconds=1)),
            kind=e.kind,
            kind_label=labels.get(e.kind, e.kind),
            actor=user_name(e.actor),
            message=e.message,
            detail=_detail(e.detail),
            alert=e.kind in ALERT_KINDS or _is_error(e),
        )
        for e in events
    ]


def _is_error(event: AuditEvent) -> bool:
    code = event.detail.get("errcode") if isinstance(event.detail, dict) else None
    return event.kind == AuditKind.PBX_RESPONSE and code not in (0, None)


def _detail(detail: Any) -> list[tuple[str, str]]:
    if not isinstance(detail, dict):
        return []
    keys = [k for k in DETAIL_LABELS if k in detail] + [k for k in detail if k not in DETAIL_LABELS]
    return [(DETAIL_LABELS.get(k, k.replace("_", " ")), _text(detail[k])) for k in keys]


def _text(value: Any) -> str:
    if value is None:
        return "\u2013"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return "; ".join(
            ", ".join(f"{k} {v}" for k, v in item.items()) if isinstance(item, dict) else str(item)
            for item in value
        )
    return str(value)
