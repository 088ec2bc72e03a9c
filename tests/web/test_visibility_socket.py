"""The dashboard reports whether it is on screen (Page Visibility API) over its socket: a hidden
page is connected but not online, so calls go by the fallback policy as if nobody were there.

In process, through the whole WebSocket stack (origin check, session, consumer), on whichever
channel layer and database the settings give.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from pbxscreen.asgi import application
from screening.calls import presence
from screening.models import Presence, Trunk
from tests.support.live import make_user

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = [(b"origin", b"http://localhost"), (b"host", b"localhost")]


def log_in(username: str) -> str:
    client = Client()
    client.force_login(make_user(username))
    return client.cookies["sessionid"].value


async def open_socket(session_key: str) -> WebsocketCommunicator:
    cookie = (b"cookie", f"sessionid={session_key}".encode())
    communicator = WebsocketCommunicator(
        application.app, "/ws/operator/", headers=[*ORIGIN, cookie]
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    assert json.loads(await communicator.receive_from(timeout=5))["type"] == "snapshot"
    return communicator


async def send(communicator: WebsocketCommunicator, message: Any) -> None:
    text = message if isinstance(message, str) else json.dumps(message)
    await communicator.send_to(text_data=text)


async def pong(communicator: WebsocketCommunicator) -> None:
    """A ping answered: every message sent before it has been handled (one at a time, in order),
    and the socket is alive."""
    await send(communicator, {"type": "ping", "t": 1})
    while (msg := json.loads(await communicator.receive_from(timeout=5)))["type"] != "pong":
        # Pushes are not this test's business; text that is not JSON is answered with an error.
        assert msg["type"] in {"call", "link", "error"}, msg


async def who() -> tuple[set[str], set[str]]:
    """(online, connected but hidden), as the fallback policy and the supervisor read them."""

    def read() -> tuple[set[str], set[str]]:
        online = set(presence.online_users().values_list("username", flat=True))
        hidden = set(presence.hidden_users().values_list("username", flat=True))
        return online, hidden

    return await sync_to_async(read)()


def test_hidden_then_shown_again_counts_at_once() -> None:
    trunk = Trunk.objects.create(name="peer-to-41", fallback_policy="refuse")
    keys = {"alice": log_in("alice"), "bob": log_in("bob")}

    async def scenario() -> None:
        alice = await open_socket(keys["alice"])
        bob = await open_socket(keys["bob"])
        assert await who() == ({"alice", "bob"}, set())
        await send(alice, {"type": "visibility", "visible": True})  # what every page says first
        await send(alice, {"type": "visibility", "visible": False})
        await pong(alice)
        assert await who() == ({"bob"}, {"alice"})
        await send(bob, {"type": "visibility", "visible": False})
        await pong(bob)
        assert await who() == (set(), {"alice", "bob"})
        assert not await sync_to_async(presence.any_online_for)(trunk)
        # The hidden socket still gets pushes and snapshots: it is only not counted.
        await send(alice, {"type": "snapshot"})
        assert json.loads(await alice.receive_from(timeout=5))["type"] == "snapshot"
        await send(alice, {"type": "visibility", "visible": True})
        await pong(alice)
        assert await who() == ({"alice"}, {"bob"})
        assert await sync_to_async(presence.any_online_for)(trunk)
        await alice.disconnect()
        await bob.disconnect()
        assert await who() == (set(), set())

    async_to_sync(scenario)()


GARBAGE = [
    {"type": "visibility"},
    {"type": "visibility", "visible": None},
    {"type": "visibility", "visible": "false"},
    {"type": "visibility", "visible": 0},
    {"type": "visibility", "visible": 1},
    {"type": "visibility", "visible": []},
    {"type": "visibility", "visible": {"visible": False}},
    {"type": "visibility", "visible": "x" * 1500},
    '{"type": "visibility", "visible": NaN}',
    '{"type": "visibility", "visible": fals',
    json.dumps({"type": "visibility", "visible": False, "pad": "x" * 3000}),  # over the limit
]


def test_a_malformed_visibility_report_changes_nothing_and_the_socket_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="screening.consumers")
    key = log_in("gary")

    async def scenario() -> None:
        socket = await open_socket(key)
        for junk in GARBAGE:
            await send(socket, junk)
        await pong(socket)
        assert await who() == ({"gary"}, set())
        # Hidden for real, then garbage again: still hidden.
        await send(socket, {"type": "visibility", "visible": False})
        for junk in GARBAGE[:8]:
            await send(socket, junk)
        await pong(socket)
        assert await who() == (set(), {"gary"})
        await socket.disconnect()

    async_to_sync(scenario)()
    malformed = [r for r in caplog.records if "malformed visibility" in r.getMessage()]
    # Each one that parsed as a JSON object (NaN does); text that did not is answered as ever.
    assert len(malformed) == 9 + 8
    assert all(len(r.getMessage()) < 400 for r in malformed)  # oversized values are cut short


def test_a_hidden_socket_keeps_its_row_fresh_and_hidden_through_pings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(presence, "REFRESH_EVERY", 0.0)  # refresh on every ping, not every 15 s
    key = log_in("alice")

    async def scenario() -> None:
        socket = await open_socket(key)
        await send(socket, {"type": "visibility", "visible": False})
        await pong(socket)
        stale = timezone.now() - presence.PRESENCE_TTL - timedelta(seconds=1)
        await sync_to_async(lambda: Presence.objects.update(last_seen=stale))()
        assert await who() == (set(), set())  # not answering pings: not even connected
        await pong(socket)
        assert await who() == (set(), {"alice"})  # answering again, and still hidden
        await sync_to_async(lambda: Presence.objects.all().delete())()  # purged meanwhile
        await pong(socket)
        assert await who() == (set(), {"alice"})  # created again as it was: hidden
        await socket.disconnect()

    async_to_sync(scenario)()
