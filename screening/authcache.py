"""Who is signed in, per process, without three queries on every request.

Every operator request (a decision above all) needs the user behind the session and whether they
may decide calls: stock ``ModelBackend`` reads the user row, then the user's and their groups'
permissions, on every request. ``CachedModelBackend`` keeps what it read per process, with the
user's permissions and operator groups, and checks on every request that nothing changed since:
one read of the shared cache (Redis when scaled out, so a change made in any process is seen by
all), for a *generation* that ``forget`` replaces whenever the user's access may have changed.

``forget`` is called from the receivers in screening.calls.sessions, which already hear every
such change (logout, a new password, deactivation or deletion, permissions of the user or of a
group of theirs, group membership), both at once and after the change commits: a request in
between may read the old rows, but it keeps them under the generation it read first, which the
second ``forget`` has replaced. A cache that was cleared or restarted (its ``epoch`` is gone)
makes every process read again, and so does a user's generation gone missing (evicted under
memory pressure): a fresh one is made, which nothing kept matches. Revocation stays immediate, on
every process. Two gaps, each closed by ``KEEP_SECONDS``: if both of ``forget``'s writes fail (the
cache unreachable from the process making the change, and only from it), or if the cache comes
back from a snapshot older than the change, another process may keep what it read before.

With the shared cache unreachable nothing kept can be shown current: requests then read the
database as ``ModelBackend`` does (a Redis outage costs queries, never a 500), and a process that
meets the outage drops everything it kept, since a change made meanwhile could not replace the
generation.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction

from screening.health import CACHE_ERRORS, describe

log = logging.getLogger("screening.authcache")

EPOCH_KEY = "pbxscreen:auth:epoch"
# A kept entry is read again after this long even when nothing was said to change (a safety net
# for an edit made behind the product's back, with no signal: raw SQL, another program).
KEEP_SECONDS = 60.0
_PERMS = "_screening_perms"  # on a user this backend returned: their permissions, as read
_GROUPS = "_screening_group_ids"


def _key(user_pk: Any) -> str:
    return f"pbxscreen:auth:user:{user_pk}"


@dataclass(frozen=True)
class _Entry:
    version: tuple[Any, Any]  # (epoch, the user's generation) when it was read
    user: AbstractBaseUser
    until: float  # monotonic


_entries: dict[Any, _Entry] = {}
_lock = threading.Lock()


def _drop_all(exc: BaseException, doing: str) -> None:
    log.warning(
        "shared cache unavailable while %s (%s): users read from the database", doing, describe(exc)
    )
    with _lock:
        _entries.clear()


def _version(user_pk: Any) -> tuple[Any, Any] | None:
    """(epoch, generation) as the shared cache holds them now: one round trip. None when the
    cache cannot be read (the module's docstring)."""
    key = _key(user_pk)
    try:
        found = cache.get_many([EPOCH_KEY, key])
        # A new or cleared cache, or a key evicted: a fresh value (the first ``add`` of all the
        # processes wins) matches nothing any process kept, so every one reads again.
        epoch, generation = (found.get(k) or _fresh(k) for k in (EPOCH_KEY, key))
    except CACHE_ERRORS as exc:
        _drop_all(exc, "checking a signed-in user")
        return None
    return epoch, generation


def _fresh(key: str) -> Any:
    cache.add(key, uuid.uuid4().hex, None)
    return cache.get(key)


def forget(user_pks: Iterable[Any]) -> None:
    """The access of these users may have changed: every process reads them again. Now, and
    again after the current transaction commits (see the module's docstring)."""
    keys = sorted({_key(pk) for pk in user_pks if pk is not None})
    if not keys:
        return

    def bump() -> None:
        try:
            cache.set_many({key: uuid.uuid4().hex for key in keys}, None)
        except CACHE_ERRORS as exc:
            _drop_all(exc, "telling the processes of a change of access")

    bump()
    transaction.on_commit(bump, robust=True)


def group_ids(user: AbstractBaseUser) -> list[int] | None:
    """The user's group ids as this backend read them with the user, or None (another backend's
    user: ask the database)."""
    found = getattr(user, _GROUPS, None)
    return list(found) if found is not None else None


class CachedModelBackend(ModelBackend):
    """``ModelBackend`` (same checks, same permissions) with the user, their permissions and
    their groups kept per process under the shared generation (the module's docstring)."""

    def get_user(self, user_id: Any) -> AbstractBaseUser | None:
        version = _version(user_id)
        if version is None:
            return super().get_user(user_id)
        entry = _entries.get(user_id)
        if entry is not None and entry.version == version and entry.until > time.monotonic():
            return copy.copy(entry.user)  # a request may change its copy (last_login, ...)
        user = super().get_user(user_id)
        if user is None:
            with _lock:
                _entries.pop(user_id, None)
            return None
        perms = frozenset(super().get_all_permissions(user))  # an inactive user is None above
        groups = tuple(user.groups.values_list("pk", flat=True))
        setattr(user, _PERMS, perms)
        setattr(user, _GROUPS, groups)
        with _lock:
            _entries[user_id] = _Entry(version, user, time.monotonic() + KEEP_SECONDS)
        return copy.copy(user)

    def get_all_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        perms = getattr(user_obj, _PERMS, None)
        if perms is None or obj is not None:
            return super().get_all_permissions(user_obj, obj)
        return set(perms) if user_obj.is_active and not user_obj.is_anonymous else set()
