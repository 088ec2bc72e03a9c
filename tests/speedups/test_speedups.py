"""The speedups in isolation: the in-memory layer, the consumer's dispatch and direct delivery,
SQLite's fair write lock."""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import channels.consumer
import pytest
from channels.exceptions import ChannelFull
from channels.testing import WebsocketCommunicator

from screening.speedups.backends.sqlite3.base import FairLock
from screening.speedups.layer import FastInMemoryChannelLayer
from tests.support.cluster import missing_service
from tests.support.consumers import DirectConsumer, EchoConsumer


def run_async(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


# --- the layer ------------------------------------------------------------------------------


@run_async
async def test_group_send_reaches_every_member_once() -> None:
    layer = FastInMemoryChannelLayer(capacity=10)
    names = [await layer.new_channel() for _ in range(50)]
    for name in names:
        await layer.group_add("ops", name)
    await layer.group_send("ops", {"type": "push.message", "text": "hi", "nested": {"a": 1}})
    got = [await asyncio.wait_for(layer.receive(name), 1) for name in names]
    assert all(m["text"] == "hi" for m in got)
    got[0]["text"] = "changed"  # each member has its own top-level dict
    assert got[1]["text"] == "hi"
    assert all(not inbox.items for inbox in layer.inboxes.values())


@run_async
async def test_a_receiver_that_goes_away_drops_its_inbox() -> None:
    layer = FastInMemoryChannelLayer()
    name = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(name))
    await asyncio.sleep(0.01)
    assert name in layer.inboxes
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert name not in layer.inboxes


@run_async
async def test_group_discard_stops_delivery() -> None:
    layer = FastInMemoryChannelLayer()
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("ops", a)
    await layer.group_add("ops", b)
    await layer.group_discard("ops", b)
    await layer.group_send("ops", {"type": "x"})
    assert (await layer.receive(a))["type"] == "x"
    assert b not in layer.inboxes


@run_async
async def test_stale_messages_expire_and_their_channel_leaves_groups() -> None:
    layer = FastInMemoryChannelLayer(expiry=0.05, sweep_interval=0.0)
    stale, live = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("ops", stale)
    await layer.group_add("ops", live)
    await layer.group_send("ops", {"type": "old"})
    await asyncio.sleep(0.1)
    await layer.group_send("ops", {"type": "trigger"})  # its sweep runs first (interval 0)
    # Nobody received "old" in time: it was dropped and both channels left the group, as stock.
    assert not layer.groups.get("ops")
    assert not layer.inboxes
    await layer.send(stale, {"type": "new"})
    assert (await asyncio.wait_for(layer.receive(stale), 1))["type"] == "new"


@run_async
async def test_receive_skips_an_expired_head_message() -> None:
    layer = FastInMemoryChannelLayer(expiry=0.05, sweep_interval=3600)
    name = await layer.new_channel()
    await layer.send(name, {"type": "old"})
    await asyncio.sleep(0.1)
    layer.expiry = 60
    await layer.send(name, {"type": "new"})
    assert (await asyncio.wait_for(layer.receive(name), 1))["type"] == "new"


@run_async
async def test_capacity_is_respected() -> None:
    layer = FastInMemoryChannelLayer(capacity=2)
    full, roomy = await layer.new_channel(), await layer.new_channel()
    await layer.send(full, {"type": "1"})
    await layer.send(full, {"type": "2"})
    with pytest.raises(ChannelFull):
        await layer.send(full, {"type": "3"})
    await layer.group_add("ops", full)
    await layer.group_add("ops", roomy)
    await layer.group_send("ops", {"type": "g"})  # the full member misses it, the other gets it
    assert [(await layer.receive(full))["type"] for _ in range(2)] == ["1", "2"]
    assert (await layer.receive(roomy))["type"] == "g"


@run_async
async def test_the_full_sweep_runs_at_most_once_per_interval(monkeypatch: Any) -> None:
    layer = FastInMemoryChannelLayer(sweep_interval=3600)
    sweeps = []
    monkeypatch.setattr(layer, "sweep", lambda: sweeps.append(1))
    names = [await layer.new_channel() for _ in range(20)]
    for name in names:
        await layer.group_add("ops", name)
    for _ in range(5):
        await layer.group_send("ops", {"type": "x"})
    for name in names:
        for _ in range(5):
            await layer.receive(name)
    assert sweeps == []


# --- the consumer ---------------------------------------------------------------------------


@pytest.fixture
def fast_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "screening.speedups.layer.FastInMemoryChannelLayer"}
    }


@pytest.mark.usefixtures("fast_layer")
@run_async
async def test_consumer_forwards_pushes_in_order_without_a_thread_hop(monkeypatch: Any) -> None:
    hops: list[int] = []

    async def counting_close() -> None:
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting_close)
    from channels.layers import get_channel_layer

    communicator = WebsocketCommunicator(EchoConsumer.as_asgi(), "/ws/")
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_from() == "snapshot"
    hops_after_connect = len(hops)
    assert hops_after_connect == 1  # websocket.connect keeps the stock close_old_connections
    layer = get_channel_layer()
    for i in range(20):
        await layer.group_send("ops", {"type": "push.message", "text": f"m{i}"})
    assert [await communicator.receive_from() for _ in range(20)] == [f"m{i}" for i in range(20)]
    assert len(hops) == hops_after_connect  # no hop per push
    await communicator.send_to(text_data="hello")
    assert await communicator.receive_from() == "echo:hello"
    assert len(hops) == hops_after_connect + 1
    await communicator.disconnect()
    assert not layer.groups.get("ops")


@pytest.mark.usefixtures("fast_layer")
@run_async
async def test_idle_consumers_take_pushes_at_once_and_busy_ones_keep_the_order() -> None:
    from channels.layers import get_channel_layer

    DirectConsumer.release, DirectConsumer.taken_directly = asyncio.Event(), []
    communicator = WebsocketCommunicator(DirectConsumer.as_asgi(), "/ws/")
    assert (await communicator.connect())[0]
    assert await communicator.receive_from() == "snapshot"
    layer = get_channel_layer()
    await layer.group_send("ops", {"type": "push.message", "text": "a"})
    assert DirectConsumer.taken_directly == ["a"]  # idle: written during group_send itself
    await communicator.send_to(text_data="slow")
    await asyncio.sleep(0.05)  # the "slow" handler is now running
    for text in ("b", "c"):
        await layer.group_send("ops", {"type": "push.message", "text": text})
    assert DirectConsumer.taken_directly == ["a"]  # busy: queued behind the running handler
    DirectConsumer.release.set()
    frames = [await communicator.receive_from() for _ in range(4)]
    assert frames == ["a", "done:slow", "b", "c"]
    await asyncio.sleep(0.01)
    await layer.group_send("ops", {"type": "push.message", "text": "d"})
    assert await communicator.receive_from() == "d"
    assert DirectConsumer.taken_directly == ["a", "d"]  # idle again
    await communicator.disconnect()
    assert not layer.sinks  # detached with the consumer


# --- SQLite's fair write lock ---------------------------------------------------------------


def test_fair_lock_hands_over_in_arrival_order() -> None:
    lock = FairLock()
    assert lock.acquire(1)
    order: list[int] = []
    threads = []
    for i in range(8):
        thread = threading.Thread(
            target=lambda i=i: (lock.acquire(5), order.append(i), lock.release())
        )
        thread.start()
        threads.append(thread)
        time.sleep(0.02)  # arrive one after the other
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order == list(range(8))
    assert not lock.locked


def test_fair_lock_serves_urgent_waiters_first_each_in_arrival_order() -> None:
    lock = FairLock()
    assert lock.acquire(1)
    order: list[str] = []
    threads = []
    arrivals = [("background-1", False), ("urgent-1", True), ("background-2", False)]
    arrivals += [("urgent-2", True)]
    for name, urgent in arrivals:
        thread = threading.Thread(
            target=lambda n=name, u=urgent: (
                lock.acquire(5, urgent=u),
                order.append(n),
                lock.release(),
            )
        )
        thread.start()
        threads.append(thread)
        time.sleep(0.02)  # arrive one after the other
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order == ["urgent-1", "urgent-2", "background-1", "background-2"]
    assert not lock.locked


def test_fair_lock_times_out() -> None:
    lock = FairLock()
    assert lock.acquire(1)
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(lock.acquire(0.05)))
    thread.start()
    thread.join(2)
    assert got == [False]
    lock.release()
    assert not lock.locked


# --- the middleware ---------------------------------------------------------------------------


async def _sync_thread_visits(path: str, *, inline: bool) -> tuple[int, int]:
    """POST ``path`` (anonymous: a JSON 401) through the ASGI handler; (its status, how many times
    the request ran work on Django's one sync thread)."""
    from asgiref.sync import SyncToAsync
    from django.test import AsyncClient
    from django.test.client import AsyncClientHandler

    from screening.speedups.middleware import InlineMiddlewareLoading

    executor = SyncToAsync.single_thread_executor
    visits = 0
    submit = executor.submit

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal visits
        visits += 1
        return submit(*args, **kwargs)

    executor.submit = counting  # type: ignore[method-assign]
    client = AsyncClient()
    if inline:  # the test client's handler, built as the server's asgi_handler() builds it

        class Handler(InlineMiddlewareLoading, AsyncClientHandler):
            pass

        client.handler = Handler(enforce_csrf_checks=False)
    try:
        response = await client.post(path)
    finally:
        del executor.submit
    return response.status_code, visits


@pytest.mark.django_db(transaction=True)
@run_async
async def test_middleware_hooks_run_on_the_event_loop() -> None:
    status, visits = await _sync_thread_visits("/calls/1/accept", inline=True)
    assert status == 401
    # What is left is the handler's own: request_started, request_finished, response.close().
    assert visits <= 3


@pytest.mark.django_db(transaction=True)
def test_without_inline_middleware_every_hook_visits_the_sync_thread() -> None:
    status, visits = asyncio.run(_sync_thread_visits("/calls/1/accept", inline=False))
    assert status == 401
    assert visits >= 15  # a hop per process_request, process_view and process_response


# --- the Redis pub/sub layer's fan-out ------------------------------------------------------


@pytest.fixture
def redis_fanout_layer(settings: Any) -> Iterator[None]:
    if not settings.REDIS_URL:
        missing_service("the Redis fan-out layer's tests need REDIS_URL")
    from channels.layers import channel_layers

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "screening.speedups.redis_layer.FanOutRedisPubSubChannelLayer",
            # A prefix of its own: other test processes may share this Redis database.
            "CONFIG": {"hosts": [settings.REDIS_URL], "prefix": f"fanout-test-{os.getpid()}"},
        }
    }
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.mark.scaleout
@pytest.mark.usefixtures("redis_fanout_layer")
@run_async
async def test_redis_idle_consumers_take_pushes_at_once_and_busy_ones_keep_the_order() -> None:
    from channels.layers import get_channel_layer

    DirectConsumer.release, DirectConsumer.taken_directly = asyncio.Event(), []
    layer = get_channel_layer()
    communicators = [WebsocketCommunicator(DirectConsumer.as_asgi(), "/ws/") for _ in range(3)]
    for communicator in communicators:
        assert (await communicator.connect())[0]
        assert await communicator.receive_from() == "snapshot"
    await layer.group_send("ops", {"type": "push.message", "text": "a"})
    for communicator in communicators:
        assert await communicator.receive_from() == "a"
    # Each idle socket took it from the one decoded message, none through its queue.
    assert DirectConsumer.taken_directly == ["a"] * 3
    busy = communicators[0]
    await busy.send_to(text_data="slow")
    await asyncio.sleep(0.05)  # the "slow" handler is now running on the first socket
    for text in ("b", "c"):
        await layer.group_send("ops", {"type": "push.message", "text": text})
    for communicator in communicators[1:]:
        assert [await communicator.receive_from() for _ in range(2)] == ["b", "c"]
    DirectConsumer.release.set()
    assert [await busy.receive_from() for _ in range(3)] == ["done:slow", "b", "c"]
    assert DirectConsumer.taken_directly.count("b") == 2  # the busy socket's went the queued way
    await asyncio.sleep(0.05)
    await layer.group_send("ops", {"type": "push.message", "text": "d"})
    for communicator in communicators:
        assert await communicator.receive_from() == "d"
    assert DirectConsumer.taken_directly.count("d") == 3  # idle again
    for communicator in communicators:
        await communicator.disconnect()
    assert not layer.sinks  # detached with the consumers
    await layer.flush()


@pytest.mark.scaleout
@pytest.mark.usefixtures("redis_fanout_layer")
@run_async
async def test_redis_fanout_keeps_each_sockets_order_under_a_stream_of_pushes() -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    communicators = [WebsocketCommunicator(EchoConsumer.as_asgi(), "/ws/") for _ in range(2)]
    communicators.append(WebsocketCommunicator(DirectConsumer.as_asgi(), "/ws/"))
    DirectConsumer.release, DirectConsumer.taken_directly = asyncio.Event(), []
    for communicator in communicators:
        assert (await communicator.connect())[0]
        assert await communicator.receive_from() == "snapshot"
    for i in range(50):
        await layer.group_send("ops", {"type": "push.message", "text": f"m{i}"})
    expected = [f"m{i}" for i in range(50)]
    for communicator in communicators:
        assert [await communicator.receive_from() for _ in range(50)] == expected
    for communicator in communicators:
        await communicator.disconnect()
    await layer.flush()


# --- direct writes on Twisted's TCP transport -------------------------------------------------

DIRECT_WRITE_SCRIPT = r"""
import asyncio, socket, sys
from twisted.internet import asyncioreactor
asyncioreactor.install(asyncio.new_event_loop())
from twisted.internet import protocol, reactor
from screening.speedups import sockets

CHUNKS = [bytes([65 + i % 26]) * (700 + i % 900) for i in range(3000)]
result = {}

class Writer(protocol.Protocol):
    def connectionMade(self):
        sends = []
        real = self.transport.socket
        real.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        class Counting:  # counts what went straight to send()
            def __getattr__(self, name):
                return getattr(real, name)
            def send(self, data):
                sends.append(len(data))
                return real.send(data)
        self.transport.socket = Counting()
        result["installed"] = sockets.install(self.transport)
        for chunk in CHUNKS:  # far more than a socket buffer: most writes find data buffered
            self.transport.write(chunk)
        result["sends"] = sends
        self.transport.loseConnection()

factory = protocol.Factory.forProtocol(Writer)
port = reactor.listenTCP(0, factory, interface="127.0.0.1")
client = socket.socket()
client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
client.connect(("127.0.0.1", port.getHost().port))
client.setblocking(False)
got = bytearray()

def read():
    try:
        data = client.recv(1 << 20)
    except BlockingIOError:
        return
    if not data:
        reactor.removeReader(reader); reactor.stop(); return
    got.extend(data)

class Reader:
    def fileno(self): return client.fileno()
    def doRead(self): read()
    def logPrefix(self): return "reader"
    def connectionLost(self, reason): pass
reader = Reader()
reactor.addReader(reader)
reactor.callLater(20, reactor.stop)
reactor.run()
assert result["installed"], result
assert bytes(got) == b"".join(CHUNKS), (len(got), sum(map(len, CHUNKS)))
# The first writes went straight out; once the buffer filled, the rest went through Twisted.
assert 0 < len(result["sends"]) < len(CHUNKS), len(result["sends"])
print("ok", len(result["sends"]))
"""


def test_direct_write_keeps_every_byte_in_order_through_a_full_socket_buffer() -> None:
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", DIRECT_WRITE_SCRIPT],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")
