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


@pytest.mark.django_db
def test_a_hidden_dashboard_is_connected_but_not_online() -> None:
    """Only sockets whose page is on screen count: with every tab of the trunk's operators in
    the background, nobody is online for it, so its fallback policy applies."""
    trunk = Trunk.objects.create(name="peer-to-41", fallback_policy="refuse")
    alice, bob = make_user("alice"), make_user("bob")
    presence.join(alice, "chan.a1")
    presence.join(bob, "chan.b1")
    assert presence.any_online_for(trunk)

    presence.set_visible("chan.a1", alice, False)
    assert [u.username for u in presence.online_users()] == ["bob"]
    assert [u.username for u in presence.hidden_users()] == ["alice"]
    presence.set_visible("chan.b1", bob, False)
    assert not presence.online_users().exists()
    assert not presence.any_online_for(trunk)
    assert [u.username for u in presence.hidden_users()] == ["alice", "bob"]

    # One visible tab is enough, whatever the user's other tabs do.
    presence.join(alice, "chan.a2")
    assert presence.any_online_for(trunk)
    assert [u.username for u in presence.online_users()] == ["alice"]
    assert [u.username for u in presence.hidden_users()] == ["bob"]

    # Shown again: online at once, no ping needed.
    presence.set_visible("chan.b1", bob, True)
    assert [u.username for u in presence.online_users()] == ["alice", "bob"]
    assert not presence.hidden_users().exists()


@pytest.mark.django_db
def test_a_hidden_socket_that_stops_answering_pings_is_not_even_connected() -> None:
    alice = make_user("alice")
    presence.join(alice, "chan.a1", visible=False)
    assert list(presence.hidden_users()) == [alice]
    stale = timezone.now() - presence.PRESENCE_TTL - timedelta(seconds=1)
    Presence.objects.update(last_seen=stale)
    assert not presence.hidden_users().exists()
    assert not presence.online_users().exists()
    # A ping brings it back as it was: hidden, so still not online.
    presence.refresh("chan.a1", alice, visible=False)
    assert list(presence.hidden_users()) == [alice]
    assert not presence.online_users().exists()


@pytest.mark.django_db
def test_a_purged_row_comes_back_as_visible_as_its_socket_last_said() -> None:
    alice = make_user("alice")
    presence.join(alice, "chan.a1")
    presence.set_visible("chan.a1", alice, False)
    presence.leave("chan.a1")  # as if purged while the socket lived on
    presence.refresh("chan.a1", alice, visible=False)
    assert Presence.objects.get(channel_name="chan.a1").visible is False
    assert not presence.online_users().exists()
    presence.leave("chan.a1")
    presence.set_visible("chan.a1", alice, True)
    assert list(presence.online_users()) == [alice]


@pytest.mark.django_db
def test_hidden_users_leaves_out_those_who_may_not_decide() -> None:
    supervisor = make_user("sue", group="Supervisors")
    presence.join(supervisor, "chan.s", visible=False)
    olly = make_user("olly")
    presence.join(olly, "chan.o", visible=False)
    assert list(presence.hidden_users()) == [olly]
    olly.is_active = False
    olly.save()
    assert not presence.hidden_users().exists()
