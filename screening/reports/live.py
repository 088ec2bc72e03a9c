"""The supervisor's live view: who is online, who is connected with the dashboard hidden, the calls
waiting now (read-only), the PBX link."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from screening.calls import presence, push
from screening.calls.payload import call_payload, epoch_ms
from screening.models import OPEN_STATUSES, Call, CallStatus, Presence
from screening.pbx import link

MAX_CALLS = 200  # a supervisor's overview, not a queue to work through


def online() -> list[dict[str, Any]]:
    """Operators with a live socket on screen, with how many sockets (tabs) and since when."""
    return _people(presence.online_users(), visible=True)


def hidden() -> list[dict[str, Any]]:
    """Operators connected with no dashboard on screen (a tab in the background): not online."""
    return _people(presence.hidden_users(), visible=False)


def _people(found: QuerySet[AbstractBaseUser], visible: bool) -> list[dict[str, Any]]:
    users = {u.pk: u for u in found.prefetch_related("groups")}
    sockets = (
        Presence.objects.filter(
            user_id__in=users,
            last_seen__gte=timezone.now() - presence.PRESENCE_TTL,
            visible=visible,
        )
        .values("user_id")
        .annotate(n=Count("pk"), since=Min("connected_at"))
    )
    by_user = {row["user_id"]: row for row in sockets}
    result = []
    for pk, user in users.items():
        row = by_user.get(pk, {"n": 0, "since": None})
        result.append(
            {
                "id": pk,
                "name": user.get_full_name() or user.get_username(),
                "username": user.get_username(),
                "groups": sorted(g.name for g in user.groups.all()),
                "sockets": row["n"],
                "since": epoch_ms(row["since"]),
            }
        )
    return sorted(result, key=lambda u: u["name"].lower())


def state() -> dict[str, Any]:
    calls = (
        Call.objects.select_related("trunk", "decided_by")
        .filter(status__in=OPEN_STATUSES)
        .order_by("deadline")[:MAX_CALLS]
    )
    return {
        "server_time": push.now_ms(),
        "online": online(),
        "hidden": hidden(),
        "calls": [_in_readers_language(call_payload(c), c) for c in calls],
        "link": link.get_state(),
    }


def _in_readers_language(payload: dict[str, Any], call: Call) -> dict[str, Any]:
    """A payload is worded in the default language (it is shared by pushes); this view answers
    one supervisor, so its label is in their language."""
    payload["status_label"] = str(CallStatus(call.status).label)
    return payload
