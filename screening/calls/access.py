"""Who sees and decides which calls: a trunk with an operator group is for that group only."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db.models import Q, QuerySet

from screening import authcache
from screening.calls import push
from screening.models import Trunk

DECIDE_PERMISSION = "screening.decide_call"


def group_stream(group_id: int) -> str:
    return f"{push.OPERATORS}.g{group_id}"


def stream_for_trunk(trunk: Trunk) -> str:
    """The push stream that carries this trunk's calls."""
    return group_stream(trunk.operator_group_id) if trunk.operator_group_id else push.OPERATORS


def _group_ids(user: AbstractBaseUser) -> list[int]:
    if user.is_superuser:
        return list(Group.objects.values_list("pk", flat=True))
    kept = authcache.group_ids(user)  # read with the user, under the shared generation
    return kept if kept is not None else list(user.groups.values_list("pk", flat=True))


def streams_for(user: AbstractBaseUser) -> list[str]:
    """Everyone with the permission hears the shared stream (unrestricted trunks, link state)."""
    return [push.OPERATORS, *(group_stream(gid) for gid in _group_ids(user))]


def visible_trunks(user: AbstractBaseUser) -> Q:
    """A filter on Call for the calls this operator may see."""
    return Q(trunk__operator_group__isnull=True) | Q(trunk__operator_group__in=_group_ids(user))


def may_decide(user: AbstractBaseUser, trunk: Trunk) -> bool:
    if not user.has_perm(DECIDE_PERMISSION):
        return False
    if trunk.operator_group_id is None or user.is_superuser:
        return True
    kept = authcache.group_ids(user)
    if kept is not None:
        return trunk.operator_group_id in kept
    return user.groups.filter(pk=trunk.operator_group_id).exists()


def operators() -> QuerySet[AbstractBaseUser]:
    """The users who may decide calls at all (``screening.decide_call`` as ModelBackend grants
    it), as one query."""
    user_model = get_user_model()
    perm = Permission.objects.filter(
        content_type__app_label="screening", codename=DECIDE_PERMISSION.split(".", 1)[1]
    )
    with_perm = user_model.objects.filter(
        Q(user_permissions__in=perm) | Q(groups__permissions__in=perm)
    ).values("pk")
    # ModelBackend grants nothing to inactive users, and everything to active superusers.
    return user_model.objects.filter(is_active=True).filter(
        Q(is_superuser=True) | Q(pk__in=with_perm)
    )


def deciders(trunk: Trunk) -> QuerySet[AbstractBaseUser]:
    """The users ``may_decide`` would allow on this trunk, as one query (the fallback policy asks
    this on every call, so it must not load each user's permissions)."""
    users = operators()
    if trunk.operator_group_id is not None:
        members = Group.objects.filter(pk=trunk.operator_group_id).values("user")
        users = users.filter(Q(is_superuser=True) | Q(pk__in=members))
    return users
