"""Which operators are online, shared across processes through the database.

Each connected operator socket owns one ``Presence`` row, refreshed while the browser pings. A
socket is connected while its row was seen within ``PRESENCE_TTL``: a process that dies without
saying goodbye leaves rows that simply stop counting, so there are no ghosts to clean up first.

A connected socket counts as *online* (for the fallback policy, the supervisor view) only while
its dashboard is on screen: the browser reports the Page Visibility API's state over the socket
(``set_visible``), and a tab in the background is connected but nobody is looking at it, so a call
pushed there would only run out its window. A socket is taken as visible until it says otherwise
(a dashboard reports its state as soon as it connects).
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser, Group
from django.db.models import QuerySet
from django.utils import timezone

from screening.calls.access import deciders, operators
from screening.models import Presence, Trunk

# Browsers ping every 10 s and a consumer writes at most every REFRESH_EVERY, so a live socket's
# row is never older than ~25 s; 45 s leaves room for one lost ping.
PRESENCE_TTL = timedelta(seconds=45)
REFRESH_EVERY = 15.0  # seconds
PROCESS = f"{socket.gethostname()}:{os.getpid()}"


def _cutoff(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - PRESENCE_TTL


def join(user: AbstractBaseUser, channel_name: str, visible: bool = True) -> Presence:
    """A socket of ``user`` connected (idempotent on the channel name)."""
    now = timezone.now()
    purge_stale(now)  # opportunistic housekeeping: connects are rare compared with calls
    presence, _ = Presence.objects.update_or_create(
        channel_name=channel_name,
        defaults={"user": user, "process": PROCESS, "last_seen": now, "visible": visible},
        create_defaults={
            "user": user,
            "process": PROCESS,
            "connected_at": now,
            "last_seen": now,
            "visible": visible,
        },
    )
    return presence


def refresh(
    channel_name: str, user: AbstractBaseUser | None = None, visible: bool | None = None
) -> None:
    """The socket is still there (and, with ``visible``, on screen or not). With ``user``, a row
    purged meanwhile is created again, as visible as the socket last said it was."""
    changes: dict[str, object] = {"last_seen": timezone.now()}
    if visible is not None:
        changes["visible"] = visible
    updated = Presence.objects.filter(channel_name=channel_name).update(**changes)
    if not updated and user is not None:
        join(user, channel_name, True if visible is None else visible)


def set_visible(channel_name: str, user: AbstractBaseUser, visible: bool) -> None:
    """The socket's page was shown or hidden: counts (or stops counting) at once."""
    refresh(channel_name, user, visible)


def leave(channel_name: str) -> None:
    Presence.objects.filter(channel_name=channel_name).delete()


def _on_screen() -> QuerySet[Presence]:
    """Sockets answering pings whose dashboard is visible."""
    return Presence.objects.filter(last_seen__gte=_cutoff(), visible=True)


def online_users(group: Group | int | None = None) -> QuerySet[AbstractBaseUser]:
    """Users with at least one live socket on screen who may still decide calls, optionally only
    the members of ``group``. A user deactivated or stripped of the permission drops out at once,
    even before their sockets (perhaps in another process) have closed."""
    users = operators().filter(pk__in=_on_screen().values("user"))
    if group is not None:
        users = users.filter(groups=group)
    return users.order_by("username")


def hidden_users() -> QuerySet[AbstractBaseUser]:
    """Operators connected (their sockets answer pings) but with no dashboard on screen: not
    online, so calls go by the fallback policy as if they were away."""
    connected = Presence.objects.filter(last_seen__gte=_cutoff()).values("user")
    return (
        operators()
        .filter(pk__in=connected)
        .exclude(pk__in=_on_screen().values("user"))
        .order_by("username")
    )


def any_online_for(trunk: Trunk) -> bool:
    """Is anyone online (on screen) who may decide this trunk's calls (access.may_decide, in one
    query)?"""
    return deciders(trunk).filter(pk__in=_on_screen().values("user")).exists()


def purge_stale(now: datetime | None = None) -> int:
    """Delete rows that stopped counting; they are harmless, this only keeps the table small."""
    deleted, _ = Presence.objects.filter(last_seen__lt=_cutoff(now)).delete()
    return deleted
