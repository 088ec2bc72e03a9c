"""Which operators are online, shared across processes through the database.

Each connected operator socket owns one ``Presence`` row, refreshed while the browser pings. A
socket is online while its row was seen within ``PRESENCE_TTL``: a process that dies without
saying goodbye leaves rows that simply stop counting, so there are no ghosts to clean up first.
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


def join(user: AbstractBaseUser, channel_name: str) -> Presence:
    """A socket of ``user`` connected (idempotent on the channel name)."""
    now = timezone.now()
    purge_stale(now)  # opportunistic housekeeping: connects are rare compared with calls
    presence, _ = Presence.objects.update_or_create(
        channel_name=channel_name,
        defaults={"user": user, "process": PROCESS, "last_seen": now},
        create_defaults={
            "user": user,
            "process": PROCESS,
            "connected_at": now,
            "last_seen": now,
        },
    )
    return presence


def refresh(channel_name: str, user: AbstractBaseUser | None = None) -> None:
    """The socket is still there. With ``user``, a row purged meanwhile is created again."""
    updated = Presence.objects.filter(channel_name=channel_name).update(last_seen=timezone.now())
    if not updated and user is not None:
        join(user, channel_name)


def leave(channel_name: str) -> None:
    Presence.objects.filter(channel_name=channel_name).delete()


def online_users(group: Group | int | None = None) -> QuerySet[AbstractBaseUser]:
    """Users with at least one live socket who may still decide calls, optionally only the
    members of ``group``. A user deactivated or stripped of the permission drops out at once,
    even before their sockets (perhaps in another process) have closed."""
    live = Presence.objects.filter(last_seen__gte=_cutoff()).values("user")
    users = operators().filter(pk__in=live)
    if group is not None:
        users = users.filter(groups=group)
    return users.order_by("username")


def any_online_for(trunk: Trunk) -> bool:
    """Is anyone online who may decide this trunk's calls (access.may_decide, in one query)?"""
    live = Presence.objects.filter(last_seen__gte=_cutoff()).values("user")
    return deciders(trunk).filter(pk__in=live).exists()


def purge_stale(now: datetime | None = None) -> int:
    """Delete rows that stopped counting; they are harmless, this only keeps the table small."""
    deleted, _ = Presence.objects.filter(last_seen__lt=_cutoff(now)).delete()
    return deleted
