"""The channel-layer watchdog with a real operator socket: after something was lost on the layer,
the socket is told to resync, and the layer counts as ok again only after that."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client

from pbxscreen.asgi import application
from screening import health
from tests.support.live import make_user


async def next_of(socket: WebsocketCommunicator, kind: str, within: float = 5) -> dict[str, Any]:
    """The next message of ``kind``. Pushes of other test runs may come in between: Redis pub/sub
    channels are shared by every database number of one server."""
    async with asyncio.timeout(within):
        while True:
            message = await socket.receive_json_from(timeout=within)
            if message["type"] == kind:
                return message


@pytest.mark.django_db(transaction=True)
def test_a_lost_push_makes_every_local_socket_resync_then_the_layer_is_ok() -> None:
    client = Client()
    client.force_login(make_user("op"))
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]
    watchdog = health.layer_watchdog

    async def scenario() -> None:
        task = watchdog.start()
        assert task is not None
        try:
            await watchdog.settled(within=5)
            assert watchdog.status() == (health.OK, "")
            socket = WebsocketCommunicator(application.app, "/ws/operator/", headers=headers)
            connected, _ = await socket.connect(timeout=5)
            assert connected
            await next_of(socket, "snapshot")
            # What push.publish reports when a push could not be sent.
            watchdog.failed("a push could not be sent (test)")
            assert watchdog.status()[0] == health.DOWN
            assert await next_of(socket, "resync") == {"type": "resync"}
            await socket.send_json_to({"type": "snapshot"})  # what the browser answers
            await next_of(socket, "snapshot")
            for _ in range(100):
                if watchdog.status()[0] == health.OK:
                    break
                await asyncio.sleep(0.05)
            assert watchdog.status() == (health.OK, "")
            with pytest.raises(TimeoutError):  # once: no resync without a loss
                await next_of(socket, "resync", within=1.5)
            await socket.disconnect()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async_to_sync(scenario)()
