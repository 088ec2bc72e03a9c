"""The supervisor's live view: who is online (Presence), the waiting calls, the PBX link."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from screening.calls import presence
from screening.models import CallStatus, Presence, Trunk
from tests.support.live import make_user
from tests.support.reporting import make_call

pytestmark = pytest.mark.django_db


def test_state_lists_online_operators_and_waiting_calls(client: Client) -> None:
    client.force_login(make_user("sam", group="Supervisors"))
    alice = make_user("alice", first_name="Alice", last_name="Able")
    bob = make_user("bob", first_name="Bob", last_name="Baker")
    presence.join(alice, "chan-1")
    presence.join(alice, "chan-2")  # a second tab
    Presence.objects.create(  # Bob's process died a while ago
        user=bob,
        channel_name="chan-3",
        process="x:1",
        last_seen=timezone.now() - timedelta(hours=1),
    )
    trunk = Trunk.objects.create(name="peer-main", label="Main line")
    now = timezone.now()
    waiting = make_call(trunk, now - timedelta(seconds=2), CallStatus.PENDING, caller="07700900001")
    make_call(trunk, now - timedelta(seconds=30), CallStatus.ACCEPTED)

    state = client.get("/supervisor/state.json").json()
    assert state["ok"] is True
    assert [(p["name"], p["sockets"]) for p in state["online"]] == [("Alice Able", 2)]
    assert state["online"][0]["groups"] == ["Operators"]
    assert [c["id"] for c in state["calls"]] == [waiting.pk]
    assert state["calls"][0]["caller"] == "07700900001"
    assert state["link"]["state"] == "not_configured"

    page = client.get("/supervisor/").content.decode()
    assert "Alice Able" in page
    assert "Bob Baker" not in page
    assert "07700900001" in page
    assert "No PBX is configured" in page


def test_operators_with_the_dashboard_hidden_are_listed_apart_not_online(client: Client) -> None:
    client.force_login(make_user("sam", group="Supervisors"))
    alice = make_user("alice", first_name="Alice", last_name="Able")
    hugo = make_user("hugo", first_name="Hugo", last_name="Hidden")
    presence.join(alice, "chan-1")
    presence.join(alice, "chan-2", visible=False)  # Alice's second tab is in the background
    presence.join(hugo, "chan-3", visible=False)
    presence.join(hugo, "chan-4", visible=False)

    state = client.get("/supervisor/state.json").json()
    assert [(p["name"], p["sockets"]) for p in state["online"]] == [("Alice Able", 1)]
    assert [(p["name"], p["sockets"]) for p in state["hidden"]] == [("Hugo Hidden", 2)]

    page = client.get("/supervisor/").content.decode()
    online, hidden = page.split('id="hidden-heading"')
    assert "Hugo Hidden" not in online
    assert "Hugo Hidden" in hidden
    assert "Alice Able" in online
    assert "Alice Able" not in hidden

    presence.set_visible("chan-3", hugo, True)
    state = client.get("/supervisor/state.json").json()
    assert [p["name"] for p in state["online"]] == ["Alice Able", "Hugo Hidden"]
    assert state["hidden"] == []
