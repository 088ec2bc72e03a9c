"""Two small, documented departures from stock Channels 4.3 on the push path (design.md §5).

``FastInMemoryChannelLayer``: stock ``InMemoryChannelLayer.receive`` and ``group_send`` scan every
channel (and every group member) for expired messages on *each* call, so one broadcast to N
sockets costs O(N²); ``group_send`` also makes one task and one deep copy per member. Here the
full expiry sweep runs at most once per ``sweep_interval`` (same semantics: an expired message is
dropped and its channel leaves every group), ``receive`` drops expired messages at the head of its
own queue, and ``group_send`` copies the message once and puts it straight into each queue.

``PushConsumerMixin``: stock ``AsyncConsumer.dispatch`` runs ``close_old_connections`` in the sync
worker thread before *every* message (``aclose_old_connections``), i.e. one thread hop per push
per socket. Handlers listed in ``orm_free_handlers`` do not touch the database, so they skip it;
every other message keeps the stock behaviour (and ORM work goes through
``database_sync_to_async``, which closes stale connections itself). Its ``__call__`` also reads
the ASGI socket and the channel layer in two plain loops instead of re-arming ``asyncio.wait``
with a fresh task per message; one lock keeps handlers strictly one at a time, as stock does.

Direct delivery: a consumer may name ``direct_handlers``, synchronous methods that take a message
at once. ``group_send`` then hands such a message to a member straight away, instead of queueing
it and waking that member's task, when the member is idle: no handler running and nothing queued
before it, so the order is exactly what the queue would give. A handler returns False (socket not
open yet, or closing) and the message is queued as usual. For a push to N operators this removes
N task wake-ups, N futures and N dispatches.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from channels.consumer import get_handler_name
from channels.db import aclose_old_connections
from channels.exceptions import ChannelFull, StopConsumer
from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger("screening.fastlayer")


class _Inbox:
    """One channel's messages: a deque and its waiting receivers. Unlike stock (an asyncio.Queue
    made anew whenever the channel drains), a live consumer keeps one inbox for its lifetime.
    ``empty``/``get_nowait``/``_queue`` are what the stock expiry sweep uses."""

    __slots__ = ("items", "maxsize", "waiters")

    def __init__(self, maxsize: int) -> None:
        self.items: deque[tuple[float, dict[str, Any]]] = deque()
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.maxsize = maxsize

    @property
    def _queue(self) -> deque[tuple[float, dict[str, Any]]]:
        return self.items

    def empty(self) -> bool:
        return not self.items

    def get_nowait(self) -> tuple[float, dict[str, Any]]:
        if not self.items:
            raise asyncio.QueueEmpty
        return self.items.popleft()

    def put_nowait(self, item: tuple[float, dict[str, Any]]) -> None:
        if self.maxsize > 0 and len(self.items) >= self.maxsize:
            raise asyncio.QueueFull
        self.items.append(item)
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            with contextlib.suppress(ValueError):
                self.waiters.remove(waiter)
            if waiter.done() and not waiter.cancelled() and self.items:
                self._wake_one()  # we were handed an item we will not take: pass it on
            raise


class FastInMemoryChannelLayer(InMemoryChannelLayer):
    """In-memory layer whose broadcast cost is O(members), not O(channels x members)."""

    def __init__(self, *args: Any, sweep_interval: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sweep_interval = sweep_interval
        self._last_sweep = time.monotonic()
        # channel -> takes a group message at once (True) or leaves it to be queued (False)
        self._sinks: dict[str, Callable[[dict[str, Any]], bool]] = {}

    def attach_sink(self, channel: str, sink: Callable[[dict[str, Any]], bool]) -> None:
        self._sinks[channel] = sink

    def detach_sink(self, channel: str) -> None:
        self._sinks.pop(channel, None)

    def _maybe_clean(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            self._clean_expired()

    def _inbox(self, channel: str) -> _Inbox:
        inbox = self.channels.get(channel)
        if inbox is None:
            inbox = self.channels[channel] = _Inbox(self.get_capacity(channel))
        return inbox

    def _put(self, channel: str, message: dict[str, Any], expires: float) -> None:
        try:
            self._inbox(channel).put_nowait((expires, message))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._maybe_clean()
        self._put(channel, copy.deepcopy(message), time.time() + self.expiry)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        self._maybe_clean()
        while True:
            # Looked up on every turn: the sweep may have replaced this channel's inbox.
            inbox = self._inbox(channel)
            if not inbox.items:
                try:
                    await inbox.wait()
                except BaseException:
                    # The consumer is going away: drop its inbox unless something is queued.
                    if not inbox.items and not inbox.waiters:
                        self.channels.pop(channel, None)
                    raise
                continue
            expires, message = inbox.items.popleft()
            if expires >= time.time():
                return message
            self._remove_from_groups(channel)  # stock: a channel with a stale message leaves

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._maybe_clean()
        members = self.groups.get(group)
        if not members:
            return
        # One deep copy per broadcast; each member gets its own top-level dict over it.
        shared = copy.deepcopy(message)
        expires = time.time() + self.expiry
        full = 0
        sinks, inboxes = self._sinks, self.channels
        for channel in list(members):
            sink = sinks.get(channel)
            if sink is not None:
                inbox = inboxes.get(channel)
                if (inbox is None or not inbox.items) and sink(shared):
                    continue
            try:
                self._put(channel, dict(shared), expires)
            except ChannelFull:
                full += 1  # at-most-once, like stock: a full channel misses this message
        if full:
            log.warning("group %s: %d full channel(s) missed a message", group, full)


class PushConsumerMixin:
    """Mix in before ``AsyncWebsocketConsumer``; see the module docstring."""

    orm_free_handlers: ClassVar[frozenset[str]] = frozenset()
    # message type -> name of a synchronous method taking it at once (see the module docstring)
    direct_handlers: ClassVar[dict[str, str]] = {}

    # Set by AsyncConsumer; declared for the type checker.
    scope: dict[str, Any]
    channel_layer: Any
    channel_name: str
    channel_layer_alias: str
    base_send: Callable[[dict[str, Any]], Awaitable[None]]
    channel_receive: Callable[[], Awaitable[dict[str, Any]]]

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        sources = [receive]
        one_at_a_time = asyncio.Lock()
        in_hand: list[dict[str, Any]] = []
        direct = self.direct_handlers
        attached = False
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            sources.append(self.channel_receive)
            if direct and hasattr(self.channel_layer, "attach_sink"):

                def take_now(message: dict[str, Any]) -> bool:
                    name = direct.get(message.get("type", ""))
                    if name is None or in_hand or one_at_a_time.locked():
                        return False  # a message is in hand or being handled: queue behind it
                    return bool(getattr(self, name)(message))

                self.channel_layer.attach_sink(self.channel_name, take_now)
                attached = True

        async def pump(source: Callable[[], Awaitable[dict[str, Any]]]) -> None:
            while True:
                message = await source()
                in_hand.append(message)  # taken from its queue, waiting for the lock
                async with one_at_a_time:
                    in_hand.remove(message)
                    await self.dispatch(message)

        tasks = [asyncio.ensure_future(pump(source)) for source in sources]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, StopConsumer):
                    raise exc
        finally:
            if attached:
                self.channel_layer.detach_sink(self.channel_name)
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopConsumer):
                    await task

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        if message["type"] not in self.orm_free_handlers:
            await aclose_old_connections()
        await handler(message)
