"""Operator presence: one row per socket, shared through the database, expiring by itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from screening.calls import presence
from screening.models import Presence, Trunk
from tests.support.live import make_user


@pytest.mark.django_db
def test_join_refresh_leave_and_who_is_online() -> None:
    alice = make_user("alice")
    bob = make_user("bob")
    presence.join(alice, "chan.a1")
    presence.join(alice, "chan.a2")  # a second tab
    presence.join(bob, "chan.b1")
    assert list(presence.online_users().values_list("username", flat=True)) == ["alice", "bob"]
    row = Presence.objects.get(channel_name="chan.a1")
    assert row.process == presence.PROCESS
    presence.leave("chan.b1")
    assert list(presence.online_users().values_list("username", flat=True)) == ["alice"]
    presence.leave("chan.a1")
    assert presence.online_users().count() == 1  # the other tab still counts


@pytest.mark.django_db
def test_rows_of_a_dead_process_expire_without_cleanup_and_refresh_keeps_a_socket_alive() -> None:
    alice = make_user("alice")
    presence.join(alice, "chan.a1")
    stale = timezone.now() - presence.PRESENCE_TTL - timedelta(seconds=1)
    Presence.objects.update(last_seen=stale)  # the process died without saying goodbye
    assert not presence.online_users().exists()
    presence.refresh("chan.a1")
    assert presence.online_users().exists()
    Presence.objects.update(last_seen=stale)
    assert presence.purge_stale() == 1
    presence.refresh("chan.a1")  # a purged row is not resurrected without its user...
    assert not Presence.objects.exists()
    presence.refresh("chan.a1", alice)  # ...but is with it
    assert presence.online_users().get() == alice


@pytest.mark.django_db
def test_any_online_for_follows_the_access_rules() -> None:
    sales = Group.objects.create(name="Sales desk")
    open_trunk = Trunk.objects.create(name="peer-to-41")
    sales_trunk = Trunk.objects.create(name="register-bt", operator_group=sales)
    assert not presence.any_online_for(open_trunk)

    supervisor = make_user("sue", group="Supervisors")  # no decide_call permission
    presence.join(supervisor, "chan.s")
    assert not presence.any_online_for(open_trunk)

    olly = make_user("olly")
    presence.join(olly, "chan.o")
    assert presence.any_online_for(open_trunk)
    assert not presence.any_online_for(sales_trunk)  # not in the trunk's group
    assert list(presence.online_users(sales)) == []

    olly.groups.add(sales)
    assert presence.any_online_for(sales_trunk)
    assert list(presence.online_users(sales)) == [olly]

    olly.is_active = False
    olly.save()
    assert not presence.any_online_for(open_trunk)

    root = make_user("root", group=None, is_superuser=True)
    presence.join(root, "chan.r")
    assert presence.any_online_for(sales_trunk)


@pytest.mark.django_db
def test_someone_who_may_no_longer_decide_is_not_listed_even_with_a_fresh_row() -> None:
    """The supervisor's list drops them at once, before their socket (perhaps on another process)
    has closed and removed its row."""
    olly, ivy = make_user("olly"), make_user("ivy")
    presence.join(olly, "chan.o")
    presence.join(ivy, "chan.i")
    assert [u.username for u in presence.online_users()] == ["ivy", "olly"]
    olly.groups.clear()  # out of Operators: no screening.decide_call
    ivy.is_active = False
    ivy.save()
    assert Presence.objects.count() == 2
    assert list(presence.online_users()) == []
