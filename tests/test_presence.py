"""Operator presence: one row per socket, shared through the database, expiring by itself."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from screening import presence
from screening.models import Presence, Trunk
from tests.conftest import Live
from tests.live import make_user, session_for, wait_for


class OperatorSocket:
    """An operator's dashboard socket held open from a thread, collecting what it is sent, so a
    synchronous test can keep using the ORM while someone is online."""

    def __init__(self, live: Live, user: Any) -> None:
        self.url = live.url.replace("http://", "ws://") + "/ws/operator/"
        http = session_for(live.server, user)
        self.headers = {"Origin": live.url, "Cookie": f"sessionid={http.cookies['sessionid']}"}
        self.messages: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(self.url, headers=self.headers) as ws,
            ):
                while not self._stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.05)
                    except TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise AssertionError(f"socket closed: {msg}")
                    self.messages.append(json.loads(msg.data))
                    self._ready.set()  # the snapshot comes after the presence row is written
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> OperatorSocket:
        self._thread.start()
        assert self._ready.wait(10), "no snapshot"
        if self._error:
            raise self._error
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def statuses(self, call_id: str) -> list[str]:
        """Every status this socket was shown for the call, snapshots included."""
        seen = []
        for msg in list(self.messages):
            calls = [msg["call"]] if "call" in msg else msg.get("calls", []) + msg.get("recent", [])
            seen += [c["status"] for c in calls if c.get("call_id") == call_id]
        return seen


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


@pytest.mark.live
def test_a_dashboard_socket_is_online_while_open_across_processes(live: Live) -> None:
    alice = make_user("alice")
    with OperatorSocket(live, alice):
        row = Presence.objects.get(user=alice)  # written by the server process
        assert row.process != presence.PROCESS
        assert presence.any_online_for(Trunk.objects.create(name="peer-to-41"))
    wait_for(lambda: not Presence.objects.exists(), what="the row to go on disconnect")
