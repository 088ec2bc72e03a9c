"""A caller's recent history, shown on the call card: how often they called in the last 30 days
and how the latest finished call ended."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection

from screening.calls import sql
from screening.calls.payload import epoch_ms
from screening.i18n import neutral
from screening.models import OPEN_STATUSES, Call, CallStatus, DecidedBy

HISTORY_DAYS = 30
WITHHELD = {"", "anonymous", "unknown", "withheld", "private"}


@functools.cache
def _history_sql(vendor: str) -> tuple[str, str]:
    """The two statements of ``caller_history`` for this backend (identifiers only: every value
    is a parameter)."""
    user = get_user_model()
    col = {f: "c." + sql.column(Call, f) for f in ("caller", "received_at", "status")}
    where = f"{col['caller']} = %s AND {col['received_at']} >= %s AND {col['received_at']} < %s"
    calls = f"{sql.table(Call)} c"
    count = f"SELECT COUNT(*) FROM {calls} WHERE {where}"  # noqa: S608
    last = (
        f"SELECT {col['status']}, {col['received_at']}, c.{sql.column(Call, 'decided_by_kind')},"  # noqa: S608
        f" u.{sql.column(user, 'first_name')}, u.{sql.column(user, 'last_name')},"
        f" u.{sql.column(user, user.USERNAME_FIELD)}"
        f" FROM {calls} LEFT JOIN {sql.table(user)} u"
        f" ON u.{sql.column(user, 'id')} = c.{sql.column(Call, 'decided_by')}"
        f" WHERE {where} AND {col['status']} NOT IN ({', '.join(['%s'] * len(OPEN_STATUSES))})"
        f" ORDER BY {col['received_at']} DESC LIMIT 1"
    )
    return count, last


def caller_history(caller: str, before: datetime) -> dict[str, Any]:
    """Calls from this number in the last 30 days and how the latest finished one ended.

    Runs for every incoming call before its push, so it is two indexed statements
    (``call_caller_recent``) in plain SQL rather than two querysets (see ``screening.calls.sql``).
    """
    if caller.strip().lower() in WITHHELD:
        return {"withheld": True, "count": 0, "last": None}
    count_sql, last_sql = _history_sql(connection.vendor)
    window = [caller, sql.param(before - timedelta(days=HISTORY_DAYS)), sql.param(before)]
    [(count,)] = sql.fetch(count_sql, window)
    last_info = None
    rows = sql.fetch(last_sql, [*window, *OPEN_STATUSES]) if count else []
    if rows:
        status, at, by_kind, first, last, username = rows[0]
        full = f"{first or ''} {last or ''}".strip()  # what User.get_full_name() gives
        by_label = neutral(DecidedBy(by_kind).label) if by_kind in DecidedBy.values else by_kind
        last_info = {
            "status": status,
            "status_label": neutral(CallStatus(status).label),
            "at": epoch_ms(sql.to_datetime(at)),
            "decided_by": full or username or by_label,
        }
    return {"withheld": False, "count": count, "last": last_info}
