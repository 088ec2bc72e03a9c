"""The PBX WebSocket listener against the simulator: receive, survive drops, stay alive."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from django.core.cache import cache

from screening.pbx import link
from screening.pbx.client import PbxClient
from screening.pbx.events import Event, IncomingCall
from screening.pbx.listener import PbxListener
from screening.simulator import SimulatorThread
from tests.support.live import until

# The listener's work runs in pool threads that check their database connection first.
pytestmark = pytest.mark.django_db


def run_with_listener(
    sim: SimulatorThread, scenario: Callable[[PbxListener, list[Event]], Awaitable[None]], **kw: Any
) -> None:
    async def main() -> None:
        events: list[Event] = []

        async def handler(event: Event, arrived: datetime) -> None:
            events.append(event)

        client = PbxClient(sim.base_url, sim.client_id, sim.client_secret, cache=cache)
        listener = PbxListener(client, handler, **kw)
        task = asyncio.create_task(listener.run())
        try:
            await asyncio.wait_for(listener.connected.wait(), 5)
            await scenario(listener, events)
        finally:
            await listener.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(main())


def incoming(events: list[Event], call_id: str) -> IncomingCall | None:
    return next((e for e in events if isinstance(e, IncomingCall) and e.call_id == call_id), None)


def subscribes(sim: SimulatorThread) -> int:
    return len(sim.log("subscribe"))


def test_listener_receives_an_injected_call(pbx_sim: SimulatorThread) -> None:
    async def scenario(listener: PbxListener, events: list[Event]) -> None:
        sent = await asyncio.to_thread(pbx_sim.inject, "07700900123", "02079460000", "peer-to-41")
        call = await until(lambda: incoming(events, sent["call_id"]))
        assert call.channel_id == sent["channel_id"]
        assert call.caller == "07700900123"
        assert link.get_state()["state"] == link.UP

    run_with_listener(pbx_sim, scenario, heartbeat=5.0)


def test_listener_comes_back_after_the_pbx_drops_the_socket(pbx_sim: SimulatorThread) -> None:
    async def scenario(listener: PbxListener, events: list[Event]) -> None:
        assert subscribes(pbx_sim) == 1
        dropped_at = time.monotonic()
        await asyncio.to_thread(pbx_sim.drop_sockets)
        await until(lambda: subscribes(pbx_sim) == 2 and listener.connected.is_set())
        # Back well inside one heartbeat (5 s): the drop itself was noticed, not a missed beat.
        assert time.monotonic() - dropped_at < 4.0
        sent = await asyncio.to_thread(pbx_sim.inject, "07700900124", "02079460000", "peer-to-41")
        await until(lambda: incoming(events, sent["call_id"]))
        # One token served both connections: a reconnect must not cost one of the PBX's 8 slots.
        assert len(pbx_sim.log("get_token")) == 1

    run_with_listener(pbx_sim, scenario, heartbeat=5.0)


def test_heartbeats_keep_the_link_past_the_pbx_idle_cut() -> None:
    with SimulatorThread(call_rate=0.0, idle_timeout=1.0) as sim:

        async def scenario(listener: PbxListener, events: list[Event]) -> None:
            await asyncio.sleep(3.5)  # three and a half idle periods
            assert subscribes(sim) == 1, "the PBX cut the socket despite heartbeats"
            assert listener.connected.is_set()
            sent = await asyncio.to_thread(sim.inject, "07700900125", "02079460000", "peer-to-41")
            await until(lambda: incoming(events, sent["call_id"]))

        run_with_listener(sim, scenario, heartbeat=0.3)


def test_without_heartbeats_the_pbx_cuts_the_socket_and_the_listener_reconnects() -> None:
    # The control case for the test above: it shows the idle cut is real.
    with SimulatorThread(call_rate=0.0, idle_timeout=0.5) as sim:

        async def scenario(listener: PbxListener, events: list[Event]) -> None:
            await until(lambda: subscribes(sim) >= 2, within=5)

        run_with_listener(sim, scenario, heartbeat=30.0)


def test_link_state_shows_down_while_the_pbx_refuses_websockets(pbx_sim: SimulatorThread) -> None:
    async def scenario(listener: PbxListener, events: list[Event]) -> None:
        await asyncio.to_thread(pbx_sim.set_faults, refuse_websocket=True)
        await asyncio.to_thread(pbx_sim.drop_sockets)
        state = await until(lambda: (s := link.get_state())["state"] == link.DOWN and s)
        assert state["unscreened"]
        assert "routed unscreened" in state["message"]
        await asyncio.to_thread(pbx_sim.set_faults, refuse_websocket=False)
        await until(lambda: link.get_state()["state"] == link.UP, within=3)

    run_with_listener(pbx_sim, scenario, heartbeat=5.0)


def test_wrong_credentials_stop_after_one_attempt() -> None:
    with SimulatorThread(call_rate=0.0) as sim:

        async def main() -> None:
            async def handler(event: Event, arrived: datetime) -> None:
                pass

            client = PbxClient(sim.base_url, sim.client_id, "wrong-secret", cache=cache)
            listener = PbxListener(client, handler, heartbeat=5.0, auth_retry=0.1)
            task = asyncio.create_task(listener.run())
            await until(lambda: link.get_state()["state"] == link.AUTH_FAILED)
            await asyncio.sleep(1.0)  # ten retry periods
            await listener.stop()
            await asyncio.wait_for(task, 5)

        asyncio.run(main())
        assert len(sim.log("get_token")) == 1  # 5 failures would get our IP blocked


# --- handshakes the PBX turns away ---------------------------------------------------------------
# How a real PBX refuses a token at the WebSocket is undocumented, so each plausible way is tried.


def token_requests(sim: SimulatorThread) -> int:
    return len(sim.log("get_token")) + len(sim.log("refresh_token"))


@pytest.mark.parametrize("how", ["http_401", "http_403", "errcode", "close"])
def test_three_turned_away_handshakes_get_a_new_token(pbx_sim: SimulatorThread, how: str) -> None:
    async def scenario(listener: PbxListener, events: list[Event]) -> None:
        assert token_requests(pbx_sim) == 1
        await asyncio.to_thread(pbx_sim.reject_websockets, how)  # the token we hold, from now
        await asyncio.to_thread(pbx_sim.drop_sockets)
        await until(lambda: link.get_state()["state"] == link.DOWN)
        await until(lambda: link.get_state()["state"] == link.UP, within=10)
        # Turned away three times, then one renewal, and the link is back on the new token.
        assert pbx_sim.state()["websocket_rejections"] == 3
        assert token_requests(pbx_sim) == 2
        sent = await asyncio.to_thread(pbx_sim.inject, "07700900126", "02079460000", "peer-to-41")
        await until(lambda: incoming(events, sent["call_id"]))

    run_with_listener(pbx_sim, scenario, heartbeat=5.0)


@pytest.mark.parametrize("how", ["http_401", "errcode", "close"])
def test_a_pbx_turning_every_token_away_gets_no_login_storm(
    pbx_sim: SimulatorThread, how: str
) -> None:
    async def scenario(listener: PbxListener, events: list[Event]) -> None:
        await asyncio.to_thread(pbx_sim.reject_websockets, how, every_token=True)
        await asyncio.to_thread(pbx_sim.drop_sockets)
        await until(lambda: pbx_sim.state()["websocket_rejections"] >= 9, within=20)
        # Nine refusals, one renewal: the new token is refused too, so the fault is not the
        # token and no further one is asked for (the PBX caps live tokens at 8).
        assert token_requests(pbx_sim) == 2
        assert len(pbx_sim.log("get_token")) == 1  # and no login at all: refresh_token did it
        assert link.get_state()["state"] == link.DOWN
        await asyncio.to_thread(pbx_sim.reject_websockets, "")
        await until(lambda: link.get_state()["state"] == link.UP, within=5)
        assert token_requests(pbx_sim) == 2

    run_with_listener(pbx_sim, scenario, heartbeat=5.0)
