"""The operator WebSocket against a live server: who may connect, snapshots, pushes, groups."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from screening.models import Call, Trunk
from tests.conftest import Live, LiveFactory
from tests.support.cluster import Cluster
from tests.support.live import LiveServer, make_user, session_for, wait_for

pytestmark = pytest.mark.live


def ws_url(live: Live) -> str:
    return live.url.replace("http://", "ws://") + "/ws/operator/"


@asynccontextmanager
async def operator_socket(
    live: Live, http: requests.Session | None, origin: str | None = None
) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    headers = {"Origin": origin or live.url}
    if http is not None:
        headers["Cookie"] = f"sessionid={http.cookies['sessionid']}"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url(live), headers=headers) as ws,
    ):
        yield ws


async def next_json(ws: aiohttp.ClientWebSocketResponse, within: float = 5.0) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), within)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


# Pushes for different calls may arrive in any order (intake handles calls concurrently), so
# messages read while waiting for one call are kept for later waits instead of thrown away.
_inboxes: dict[int, list[dict[str, Any]]] = {}


async def until_call(
    ws: aiohttp.ClientWebSocketResponse, call_id: str, status: str, within: float = 5.0
) -> dict[str, Any]:
    inbox = _inboxes.setdefault(id(ws), [])

    def matches(msg: dict[str, Any]) -> bool:
        call = msg.get("call") or {}
        return call.get("call_id") == call_id and call.get("status") == status

    for msg in inbox:
        if matches(msg):
            inbox.remove(msg)
            return msg
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        msg = await next_json(ws, max(0.01, end - loop.time()))
        if matches(msg):
            return msg
        inbox.append(msg)


async def refused(live: Live, http: requests.Session | None, origin: str | None = None) -> int:
    try:
        async with operator_socket(live, http, origin) as ws:
            msg = await asyncio.wait_for(ws.receive(), 5)
            return int(ws.close_code or msg.data or 0)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


def test_anonymous_users_and_non_operators_cannot_connect(live: Live) -> None:
    supervisor = session_for(live.server, make_user("sue", group="Supervisors"))
    # Closed with a code the dashboard explains (signed out; not allowed) instead of looping.
    assert asyncio.run(refused(live, None)) == 4401
    assert asyncio.run(refused(live, supervisor)) == 4403


def test_foreign_origin_is_refused(live: Live) -> None:
    operator = session_for(live.server, make_user("olly"))
    assert asyncio.run(refused(live, operator, origin="https://evil.example")) == 403


# With every speedup off the server runs on stock Channels, Daphne and SQLite: the same loop must
# hold, which is what each speedup's switch promises (screening/speedups/README.md).
@pytest.mark.parametrize("speedups", ["all", "none"])
def test_snapshot_then_sequenced_pushes_through_a_decision(
    live_factory: LiveFactory, speedups: str
) -> None:
    live = live_factory(SPEEDUPS=speedups)
    http = session_for(live.server, make_user("alice", first_name="Alice"))
    waiting = live.sim.inject("07700900100", "02079460000", "peer-to-41")
    wait_for(lambda: Call.objects.filter(pbx_call_id=waiting["call_id"]).exists())

    async def scenario() -> None:
        async with operator_socket(live, http) as ws:
            snapshot = await next_json(ws)
            assert snapshot["type"] == "snapshot"
            assert [c["call_id"] for c in snapshot["calls"]] == [waiting["call_id"]]
            assert snapshot["link"]["state"] == "up"
            start_seq = snapshot["seq"]["operators"]

            sent = await asyncio.to_thread(live.sim.inject, "07700900101", "020", "peer-to-41")
            new = await until_call(ws, sent["call_id"], "pending")
            assert new["seq"] > start_seq
            assert new["call"]["deadline"] - new["call"]["received_at"] == live.window * 1000

            answer = await asyncio.to_thread(
                http.post, f"{live.url}/calls/{new['call']['id']}/accept", timeout=10
            )
            assert answer.status_code == 200
            deciding = await until_call(ws, sent["call_id"], "deciding")
            done = await until_call(ws, sent["call_id"], "accepted")
            assert new["seq"] < deciding["seq"] < done["seq"]
            assert new["call"]["version"] < deciding["call"]["version"] < done["call"]["version"]
            assert deciding["call"]["decided_by"] == "Alice"

            await ws.send_str(json.dumps({"type": "ping", "t": 12.5}))
            pong = await next_json(ws)
            while pong["type"] != "pong":
                pong = await next_json(ws)
            assert pong["t"] == 12.5
            assert pong["server_time"] > 0

    asyncio.run(scenario())


def test_garbage_from_the_browser_gets_an_error_and_the_socket_lives_on(live: Live) -> None:
    http = session_for(live.server, make_user("gary"))

    async def scenario() -> None:
        async with operator_socket(live, http) as ws:
            await next_json(ws)  # snapshot
            for junk in ["", "{", "[]", '"x"', json.dumps({"type": "drop_tables"}), "x" * 5000]:
                await ws.send_str(junk)
                assert (await next_json(ws))["type"] == "error"
            await ws.send_str(json.dumps({"type": "snapshot"}))
            assert (await next_json(ws))["type"] == "snapshot"

    asyncio.run(scenario())


def test_trunk_operator_group_limits_who_sees_and_decides(live: Live) -> None:
    sales = Group.objects.create(name="Sales desk")
    Trunk.objects.create(name="register-bt", label="Sales", operator_group=sales)
    member = make_user("mia")
    member.groups.add(sales)
    outsider = make_user("otto")
    member_http = session_for(live.server, member)
    outsider_http = session_for(live.server, outsider)

    async def scenario() -> None:
        async with (
            operator_socket(live, member_http) as mine,
            operator_socket(live, outsider_http) as theirs,
        ):
            await next_json(mine)
            await next_json(theirs)
            restricted = await asyncio.to_thread(live.sim.inject, "0770", "020", "register-bt")
            open_call = await asyncio.to_thread(live.sim.inject, "0771", "020", "peer-to-41")
            await until_call(mine, restricted["call_id"], "pending")
            await until_call(mine, open_call["call_id"], "pending")
            # The outsider gets the open call, and nothing at all of the restricted one.
            await until_call(theirs, open_call["call_id"], "pending")
            seen = [m.get("call", {}).get("call_id") for m in _inboxes.get(id(theirs), [])]
            assert restricted["call_id"] not in seen

            call = await asyncio.to_thread(Call.objects.get, pbx_call_id=restricted["call_id"])
            denied = await asyncio.to_thread(
                outsider_http.post, f"{live.url}/calls/{call.pk}/accept", timeout=10
            )
            assert denied.status_code == 403
            await theirs.send_str(json.dumps({"type": "snapshot"}))
            snapshot = await next_json(theirs)
            assert restricted["call_id"] not in [c["call_id"] for c in snapshot["calls"]]
            allowed = await asyncio.to_thread(
                member_http.post, f"{live.url}/calls/{call.pk}/refuse", timeout=10
            )
            assert allowed.status_code == 200

    asyncio.run(scenario())
    assert live.sim.call(Call.objects.get(trunk__name="register-bt").pbx_call_id)["outcome"] == (
        "refused"
    )


def test_a_reconnecting_operator_sees_what_happened_meanwhile(live: Live) -> None:
    http = session_for(live.server, make_user("rita"))
    sent = live.sim.inject("07700900102", "02079460000", "peer-to-41")
    call = wait_for(lambda: Call.objects.filter(pbx_call_id=sent["call_id"]).first())
    assert http.post(f"{live.url}/calls/{call.pk}/refuse", timeout=10).status_code == 200

    async def scenario() -> None:
        async with operator_socket(live, http) as ws:
            snapshot = await next_json(ws)
            assert snapshot["calls"] == []
            assert snapshot["recent"][0]["call_id"] == sent["call_id"]
            assert snapshot["recent"][0]["status"] == "refused"

    asyncio.run(scenario())


# --- access ending while the socket is open ----------------------------------------------------


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int:
    """Read until the server closes the socket (snapshots and pushes before that are fine)."""
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}:
            return int(ws.close_code or 0)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg


async def still_open(ws: aiohttp.ClientWebSocketResponse) -> None:
    await ws.send_str(json.dumps({"type": "ping", "t": 1}))
    while (await next_json(ws, 10))["type"] != "pong":
        pass


def online(supervisor: requests.Session, url: str) -> set[str]:
    """Who the supervisor's live view lists as online."""
    state = supervisor.get(f"{url}/supervisor/state.json", timeout=10).json()
    return {person["username"] for person in state["online"]}


def ended_access_closes_sockets(socket_server: LiveServer, action_server: LiveServer) -> None:
    """Three operators with sockets on ``socket_server``; on ``action_server`` one logs out, the
    admin deletes another and takes screening.decide_call from Operators. Each socket closes
    with its code, the others stay open, and the supervisor's view drops each one at once."""
    here, there = socket_server.url, action_server.url
    names = ["lou", "del", "ops"]
    users = {name: make_user(name) for name in names}
    sessions = {name: session_for(socket_server, user) for name, user in users.items()}
    boss = session_for(
        action_server, get_user_model().objects.create_superuser("boss", password="x" * 12)
    )
    supervisor = session_for(action_server, make_user("sue", group="Supervisors"))
    operators = Group.objects.get(name="Operators")

    def log_out() -> None:  # the operator's own session, from another tab, on another process
        answer = sessions["lou"].post(f"{there}/logout/", timeout=10, allow_redirects=False)
        assert answer.status_code == 302

    def delete_user() -> None:
        answer = boss.post(
            f"{there}/admin/auth/user/{users['del'].pk}/delete/",
            data={"post": "yes"},
            timeout=10,
            allow_redirects=False,
        )
        assert answer.status_code == 302, answer.text[:500]

    def take_permission() -> None:  # the group form saved with no permission ticked
        answer = boss.post(
            f"{there}/admin/auth/group/{operators.pk}/change/",
            data={"name": "Operators"},
            timeout=10,
            allow_redirects=False,
        )
        assert answer.status_code == 302, answer.text[:500]

    steps = [("lou", log_out, 4401), ("del", delete_user, 4401), ("ops", take_permission, 4403)]

    async def scenario() -> None:
        async with aiohttp.ClientSession() as http:
            sockets = {}
            for name in names:
                headers = {
                    "Origin": here,
                    "Cookie": f"sessionid={sessions[name].cookies['sessionid']}",
                }
                sockets[name] = await http.ws_connect(
                    f"{here.replace('http', 'ws')}/ws/operator/", headers=headers
                )
                assert (await next_json(sockets[name]))["type"] == "snapshot"
            assert await asyncio.to_thread(online, supervisor, there) == set(names)
            for done, (name, act, code) in enumerate(steps, start=1):
                await asyncio.to_thread(act)
                assert await closed_with(sockets[name]) == code
                left = {n for n, *_ in steps[done:]}
                assert await asyncio.to_thread(online, supervisor, there) == left
                for other in left:
                    await still_open(sockets[other])
            for ws in sockets.values():
                await ws.close()

    asyncio.run(scenario())


def test_ended_access_closes_the_socket(live: Live) -> None:
    ended_access_closes_sockets(live.server, live.server)


@pytest.mark.scaleout
def test_ended_access_closes_the_socket_on_another_process(cluster: Cluster) -> None:
    socket_server, action_server = cluster.web
    ended_access_closes_sockets(socket_server, action_server)
