"""Many processes: two `serve` (listener off) + one `pbx_listen`, on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from unittest import mock

import pytest
import requests
from django.utils import timezone

from screening.devtools.soak.bots import Crowd, Operator, login
from screening.models import Call
from tests.support.cluster import Cluster
from tests.support.live import make_user, session_for, wait_for

pytestmark = [pytest.mark.live, pytest.mark.scaleout]


def crowd(cluster: Cluster, count: int) -> Crowd:
    """Operators spread over the web processes, one per server in turn."""
    operators = []
    for i in range(count):
        user = make_user(f"op{i}")
        urls = cluster.urls[i % len(cluster.urls) :] + cluster.urls[: i % len(cluster.urls)]
        operators.append(Operator(f"op{i}", urls, login(user), seed=i))
    return Crowd(operators)


def test_a_call_reaches_operators_on_every_process(cluster: Cluster) -> None:
    group = crowd(cluster, 6)

    async def scenario() -> float:
        group.start()
        try:
            await group.connected()
            assert {op.server for op in group.operators} == set(cluster.urls)
            sent_at = time.monotonic()
            sent = await asyncio.to_thread(cluster.sim.inject, "07700900123", "020", "peer-to-41")
            await asyncio.gather(
                *(op.until(lambda o: o.sees(sent["call_id"], "pending")) for op in group.operators)
            )
            return time.monotonic() - sent_at
        finally:
            await group.stop()

    took = asyncio.run(scenario())
    print(f"\n30016 -> 6 operators on 2 processes: {took * 1000:.0f} ms")
    # The listener process owns the PBX link; the web processes never subscribed.
    assert len(cluster.sim.log("subscribe")) == 1


def test_concurrent_decisions_from_two_processes_make_one_pbx_request(cluster: Cluster) -> None:
    users = [make_user(f"racer{i}") for i in range(12)]
    # Half the operators on each process, as a proxy would spread them.
    sessions = [session_for(cluster.web[i % 2], user) for i, user in enumerate(users)]
    sent = cluster.sim.inject("07700900111", "02079460000", "peer-to-41")
    call = wait_for(lambda: Call.objects.filter(pbx_call_id=sent["call_id"]).first(), timeout=5)
    barrier = threading.Barrier(len(sessions))

    def press(index: int) -> requests.Response:
        barrier.wait()
        action = "accept" if index % 3 else "refuse"
        url = f"{cluster.web[index % 2].url}/calls/{call.pk}/{action}"
        return sessions[index].post(url, timeout=10)

    with ThreadPoolExecutor(len(sessions)) as pool:
        codes = [r.status_code for r in pool.map(press, range(len(sessions)))]
    assert codes.count(200) == 1, codes
    assert codes.count(409) == len(sessions) - 1, codes
    decisions = [
        e
        for e in cluster.sim.log()
        if e["endpoint"] in {"call/accept_inbound", "call/refuse_inbound"}
    ]
    assert len(decisions) == 1, decisions
    call.refresh_from_db()
    assert cluster.sim.call(sent["call_id"])["outcome"] == call.status


def test_all_processes_share_one_pbx_token(cluster: Cluster) -> None:
    http = [session_for(server, make_user(f"tok{i}")) for i, server in enumerate(cluster.web)]
    for round_ in range(3):
        for i, server in enumerate(cluster.web):
            sent = cluster.sim.inject(f"0770090{round_}{i}", "020", "peer-to-41")
            call = wait_for(
                lambda sent=sent: Call.objects.filter(pbx_call_id=sent["call_id"]).first(),
                timeout=5,
            )
            assert http[i].post(f"{server.url}/calls/{call.pk}/accept", timeout=10).ok
    cluster.sim.drop_sockets()  # the listener reconnects with the same token
    cluster.wait_link("down", timeout=5) if cluster.link_state() == "up" else None
    cluster.wait_link("up")
    assert cluster.sim.live_tokens() == 1
    assert len(cluster.sim.log("get_token")) == 1
    assert len(cluster.sim.log("call/accept_inbound")) == 6


def test_presence_is_shared_across_processes_and_a_killed_process_leaves_no_ghost(
    cluster: Cluster,
) -> None:
    presence = pytest.importorskip("screening.calls.presence")
    group = crowd(cluster, 4)
    pids: list[int] = []

    async def scenario() -> None:
        group.start()
        try:
            await group.connected()
            online = await asyncio.to_thread(lambda: set(presence.online_users()))
            assert {u.username for u in online} == {op.name for op in group.operators}
            # The operators on the killed process move to the other one and stay online.
            victim = cluster.web[0]
            pids.append(victim.process.pid)
            victim.process.kill()
            victim.process.wait()
            moved = [op for op in group.operators if op.server == victim.url]
            await asyncio.gather(
                *(op.until(lambda o: o.server == cluster.web[1].url, within=10) for op in moved)
            )
            online = await asyncio.to_thread(lambda: set(presence.online_users()))
            assert {u.username for u in online} == {op.name for op in group.operators}
        finally:
            await group.stop()

    asyncio.run(scenario())
    victim_pid = pids[0]
    # Everyone left. The surviving process removed its rows; the killed one could not, so its
    # rows remain, and stop counting once their last_seen is older than the TTL: no ghosts.
    wait_for(lambda: not presence.Presence.objects.exclude(process__endswith=f":{victim_pid}"))
    later = timezone.now() + presence.PRESENCE_TTL + timedelta(seconds=1)
    with mock.patch("screening.calls.presence.timezone.now", return_value=later):
        assert not presence.online_users().exists()


def test_a_burst_of_reconnecting_browsers_all_get_in(cluster: Cluster) -> None:
    """redis-py's default pool of 100 failed group_add in such a burst (HTTP 500)."""
    server = cluster.web[0]
    users = [make_user(f"burst{i}") for i in range(150)]
    ops = Crowd([Operator(u.username, [server.url], login(u), seed=i) for i, u in enumerate(users)])

    async def scenario() -> float:
        started = time.monotonic()
        ops.start()
        try:
            await ops.connected(within=60)
            return time.monotonic() - started
        finally:
            await ops.stop()

    took = asyncio.run(scenario())
    print(f"\n150 operators connected at once to one process: {took * 1000:.0f} ms")
    assert all(op.connects == 1 for op in ops.operators), [op.errors for op in ops.operators]
    assert "MaxConnectionsError" not in server.log()
