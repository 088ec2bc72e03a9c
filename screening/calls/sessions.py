"""Who may keep an operator socket open, and telling open sockets when that may have changed.

An operator socket is checked when it opens, but access can end while it is open: a logout (in
this tab, or another tab of the same browser session), the account deactivated, deleted or given
a new password, ``screening.decide_call`` taken from the user or from a group of theirs, the user
taken out of a group, a group deleted; and a trunk moved to another operator group changes which
calls a socket may see. Each change sends a signal in whichever process made it; the receivers
here send, after commit, an ``access.changed`` message to the per-user group (``user_group``) of
every user concerned, through the channel layer: Redis when scaled out, so it reaches that user's
sockets in every process. The consumer then checks again in the database (``check``) and either
closes with a code the dashboard explains, or follows its new streams and sends a fresh snapshot.

The message is a hint, as pushes are (the layer is at-most-once): the consumer also checks each
time it refreshes its presence row, so a lost message or a session that simply expired closes the
socket within a presence refresh (about 20 s) anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.utils.crypto import salted_hmac

from screening import authcache
from screening.calls import presence, push
from screening.calls.access import DECIDE_PERMISSION, deciders, operators, streams_for
from screening.models import Trunk

# Close codes the dashboard explains (static/screening/dashboard.js) and does not retry forever.
CLOSE_SIGNED_OUT = 4401  # no valid session: logged out, expired, deactivated, deleted, new password
CLOSE_FORBIDDEN = 4403  # signed in, but may not screen calls
ACCESS_CHANGED = "access.changed"  # handled by OperatorConsumer.access_changed


def user_group(user_pk: Any) -> str:
    """The channel-layer group of every operator socket of this user, in every process."""
    return f"operator-user.{user_pk}"


def session_tag(session_key: str | None) -> str:
    """Names a session in a message without carrying the key itself (a bearer secret) over the
    channel layer."""
    return salted_hmac("screening.calls.sessions", session_key or "").hexdigest()[:32]


@dataclass(frozen=True)
class Access:
    """The verdict of ``check``: a close code, or the user as loaded now and their streams."""

    close_code: int | None
    user: AbstractBaseUser | None = None
    streams: list[str] = field(default_factory=list)


class _SessionData(dict[str, Any]):
    """A session's data as ``auth.get_user`` reads it, never written back. On its own,
    ``get_user`` deletes a session whose password hash no longer matches and gives a new key to
    one signed with an old ``SECRET_KEY_FALLBACKS`` key; done from a socket, the browser would
    never get that new cookie and would be logged out. Only an HTTP response changes a session."""

    def flush(self) -> None:
        self.clear()

    def cycle_key(self) -> None:
        pass


def session_user(session_key: str | None) -> AbstractBaseUser | None:
    """The user this session is signed in as now, with Django's own checks (the account still
    exists and is active, the password has not changed since), or None."""
    if not session_key:
        return None
    # The database's copy, not the cache's: a session deleted there (``clearsessions``, by
    # hand) ends the socket too.
    store = DatabaseSessionStore(session_key)
    user = auth.get_user(SimpleNamespace(session=_SessionData(store.items())))  # type: ignore[arg-type]
    return user if user.is_authenticated else None


def check(
    session_key: str | None,
    user_pk: Any,
    *,
    has_session: bool = True,
    refresh: str | None = None,
    visible: bool | None = None,
) -> Access:
    """May the socket of ``user_pk``, opened with ``session_key``, stay open? Read from the
    database as it is now. With ``refresh`` (a channel name), also refresh its presence row
    (``visible``: whether its page is on screen, for a row that must be created again)."""
    if has_session:
        user = session_user(session_key)
    else:  # no session in the scope: only in-process tests put a user there themselves
        user = get_user_model()._default_manager.filter(pk=user_pk, is_active=True).first()
    if user is None or user.pk != user_pk:
        return Access(CLOSE_SIGNED_OUT)
    if not user.has_perm(DECIDE_PERMISSION):
        return Access(CLOSE_FORBIDDEN)
    if refresh is not None:
        presence.refresh(refresh, user, visible)
    return Access(None, user, streams_for(user))


# --- telling the sockets ----------------------------------------------------------------------


def notify(
    user_pks: Iterable[Any], *, trunks: bool = False, ended_session: str | None = None
) -> None:
    """After the current transaction commits, ask every socket of these users to check again
    (``trunks``: and to send a new snapshot, the calls it may see having changed). Every
    process also reads these users again on their next request (``authcache.forget``)."""
    pks = {pk for pk in user_pks if pk is not None}
    if not pks:
        return
    authcache.forget(pks)
    groups = sorted(user_group(pk) for pk in pks)
    message: dict[str, Any] = {"type": ACCESS_CHANGED, "trunks": trunks}
    if ended_session:
        message["ended_session"] = session_tag(ended_session)
    transaction.on_commit(lambda: push.send_to_groups(groups, message), robust=True)


def _members(group_pks: Iterable[Any]) -> list[Any]:
    return list(
        get_user_model()
        ._default_manager.filter(groups__in=list(group_pks))
        .values_list("pk", flat=True)
    )


def _seeing(*group_pks: Any) -> list[Any]:
    """Everyone who may decide the calls of a trunk of any of these operator groups (None: a
    trunk for all operators)."""
    found: set[Any] = set()
    for pk in set(group_pks):
        found.update(deciders(Trunk(operator_group_id=pk)).values_list("pk", flat=True))
    return list(found)


def _logged_out(sender: Any, request: Any, user: AbstractBaseUser | None, **kwargs: Any) -> None:
    # Sent before logout() flushes the session: the socket of exactly this session closes on the
    # tag, without racing the flush; the user's other sessions only check again.
    if user is not None:
        session = getattr(request, "session", None)
        notify([user.pk], ended_session=getattr(session, "session_key", None))


def _user_saved(
    sender: Any, instance: Any, created: bool, update_fields: Any, **kwargs: Any
) -> None:
    # Deactivation, a new password, superuser status: any edit may matter, except the
    # last_login stamp every login writes.
    if created or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    notify([instance.pk])


def _user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    notify([instance.pk])


def _m2m_receiver(
    forward: Callable[[Any], Iterable[Any]],
    reverse_pks: Callable[[set[Any]], Iterable[Any]],
    reverse_cleared: Callable[[Any], Iterable[Any]],
) -> Callable[..., None]:
    """An ``m2m_changed`` receiver telling the users a change of the relation concerns:
    ``forward(instance)`` from the relation's own side, ``reverse_pks(pk_set)`` for rows added or
    removed from the other side, ``reverse_cleared(instance)`` for a reverse ``clear()``, which is
    seen before it happens, while its rows can still be read (the message still waits for commit:
    clear() runs in a transaction)."""

    def receiver(sender: Any, action: str, reverse: bool, instance: Any, **kw: Any) -> None:
        pk_set = kw.get("pk_set")
        if action in ("post_add", "post_remove") and pk_set:
            notify(reverse_pks(pk_set) if reverse else forward(instance))
        elif action == "pre_clear":
            notify(reverse_cleared(instance) if reverse else forward(instance))

    return receiver


def _same(pks: set[Any]) -> set[Any]:
    return pks


def _the_user(user: Any) -> list[Any]:
    return [user.pk]


def _group_members(group: Group) -> list[Any]:
    return _members([group.pk])


# user.groups (instance: a user) or group.user_set (instance: a group, pk_set: users)
_memberships_changed = _m2m_receiver(_the_user, _same, _group_members)
# user.user_permissions (instance: a user) or permission.user_set (pk_set: users)
_user_permissions_changed = _m2m_receiver(
    _the_user, _same, lambda perm: perm.user_set.values_list("pk", flat=True)
)
# group.permissions (instance: a group) or permission.group_set (pk_set: groups)
_group_permissions_changed = _m2m_receiver(
    _group_members, _members, lambda perm: _members(perm.group_set.values_list("pk", flat=True))
)


def _group_deleting(sender: Any, instance: Group, **kwargs: Any) -> None:
    # Its memberships go by cascade, which sends no m2m_changed: read them now.
    notify(_members([instance.pk]))
    if Trunk.objects.filter(operator_group=instance).exists():
        # Its trunks become trunks for all operators (SET_NULL, no signal either).
        notify(operators().values_list("pk", flat=True), trunks=True)


_GROUP_BEFORE = "_sessions_operator_group_before"


def _trunk_saving(sender: Any, instance: Trunk, raw: bool, update_fields: Any, **kw: Any) -> None:
    if raw or instance._state.adding:
        return  # a new trunk has no calls yet
    if update_fields is not None and "operator_group" not in update_fields:
        return
    before = Trunk.objects.filter(pk=instance.pk).values_list("operator_group_id", flat=True)
    instance.__dict__[_GROUP_BEFORE] = before.first()


def _trunk_saved(sender: Any, instance: Trunk, **kwargs: Any) -> None:
    if _GROUP_BEFORE not in instance.__dict__:
        return
    before = instance.__dict__.pop(_GROUP_BEFORE)
    if before != instance.operator_group_id:
        notify(_seeing(before, instance.operator_group_id), trunks=True)


def connect_signals() -> None:
    """Called once from ``ScreeningConfig.ready``."""
    user_model = get_user_model()
    user_logged_out.connect(_logged_out, dispatch_uid="sessions.logged_out")
    post_save.connect(_user_saved, sender=user_model, dispatch_uid="sessions.user_saved")
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid="sessions.user_deleted")
    m2m_changed.connect(
        _memberships_changed,
        sender=user_model.groups.through,
        dispatch_uid="sessions.memberships",
    )
    m2m_changed.connect(
        _user_permissions_changed,
        sender=user_model.user_permissions.through,
        dispatch_uid="sessions.user_permissions",
    )
    m2m_changed.connect(
        _group_permissions_changed,
        sender=Group.permissions.through,
        dispatch_uid="sessions.group_permissions",
    )
    pre_delete.connect(_group_deleting, sender=Group, dispatch_uid="sessions.group_deleting")
    pre_save.connect(_trunk_saving, sender=Trunk, dispatch_uid="sessions.trunk_saving")
    post_save.connect(_trunk_saved, sender=Trunk, dispatch_uid="sessions.trunk_saved")
