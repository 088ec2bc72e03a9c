"""An in-memory channel layer whose broadcast costs O(members), written against Channels' public
``BaseChannelLayer`` interface (speedups ``memory_layer`` and ``direct_push``; README.md here).

Stock ``InMemoryChannelLayer`` (Channels 4.3) scans every channel and every group member for
expired messages on *each* ``receive`` and ``group_send``, so one broadcast to N sockets costs
O(N²), and ``group_send`` makes a task and a deep copy per member. This layer keeps the same
semantics (capacity per channel, ``ChannelFull`` at-most-once, message expiry after which the
channel leaves every group, group membership expiry) with:

- the full expiry sweep at most once per ``sweep_interval``; ``receive`` drops expired messages
  at the head of its own inbox;
- ``group_send`` copying the message once and putting it straight into each member's inbox;
- one inbox per live consumer for its lifetime (stock makes a new ``asyncio.Queue`` whenever a
  channel drains).

Direct delivery (``direct_push``): a consumer may ``attach_sink(channel, sink)``, a synchronous
callable that takes a message at once and returns False when it cannot (socket not open). A
group message is then handed to the sink instead of queued, but only while the member is idle:
its receiver is waiting on an empty inbox, so nothing from the layer is in hand, and the sink
itself refuses while a handler runs. The order a socket sees is exactly what the queue would
give. For a push to N operators this removes N task wake-ups, N futures and N dispatches.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import string
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

from screening import speedups

log = logging.getLogger("screening.speedups.layer")

Sink = Callable[[dict[str, Any]], bool]


class _Inbox:
    """One channel's messages (expiry time, message) and the receivers waiting on it."""

    __slots__ = ("items", "maxsize", "waiters")

    def __init__(self, maxsize: int) -> None:
        self.items: deque[tuple[float, dict[str, Any]]] = deque()
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.maxsize = maxsize

    def put(self, item: tuple[float, dict[str, Any]], channel: str) -> None:
        if self.maxsize > 0 and len(self.items) >= self.maxsize:
            raise ChannelFull(channel)
        self.items.append(item)
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    @property
    def idle(self) -> bool:
        """A receiver waits on an empty inbox: nothing of this channel is queued or in hand.
        (A waiter leaves the deque when it is woken or cancelled, so one there is waiting.)"""
        return not self.items and bool(self.waiters)

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


class FastInMemoryChannelLayer(BaseChannelLayer):
    """In-memory layer for one process; see the module docstring."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: dict[str, int] | None = None,
        sweep_interval: float = 1.0,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        self.group_expiry = group_expiry
        self.sweep_interval = sweep_interval
        self.inboxes: dict[str, _Inbox] = {}
        self.groups: dict[str, dict[str, float]] = {}  # group -> channel -> joined at
        self.sinks: dict[str, Sink] = {}
        self.direct = speedups.enabled("direct_push")
        self._last_sweep = time.monotonic()

    # --- direct delivery ---------------------------------------------------------------------

    def attach_sink(self, channel: str, sink: Sink) -> None:
        if self.direct:
            self.sinks[channel] = sink

    def detach_sink(self, channel: str) -> None:
        self.sinks.pop(channel, None)

    # --- channels ----------------------------------------------------------------------------

    async def new_channel(self, prefix: str = "specific.") -> str:
        suffix = "".join(random.choice(string.ascii_letters) for _ in range(12))  # noqa: S311
        return f"{prefix}.inmemory!{suffix}"

    def _inbox(self, channel: str) -> _Inbox:
        inbox = self.inboxes.get(channel)
        if inbox is None:
            inbox = self.inboxes[channel] = _Inbox(self.get_capacity(channel))
        return inbox

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._maybe_sweep()
        self._inbox(channel).put((time.time() + self.expiry, copy.deepcopy(message)), channel)

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        self._maybe_sweep()
        while True:
            # Looked up on every turn: the sweep or a flush may have replaced this inbox.
            inbox = self._inbox(channel)
            if not inbox.items:
                try:
                    await inbox.wait()
                except BaseException:
                    # The consumer is going away: drop its inbox unless something is queued.
                    if not inbox.items and not inbox.waiters:
                        self.inboxes.pop(channel, None)
                    raise
                continue
            expires, message = inbox.items.popleft()
            if expires >= time.time():
                return message
            self._leave_groups(channel)  # as stock: a channel with a stale message leaves

    # --- expiry ------------------------------------------------------------------------------

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_interval:
            self._last_sweep = now
            self.sweep()

    def sweep(self) -> None:
        """Drop expired messages (their channels leave every group) and expired memberships."""
        now = time.time()
        for channel, inbox in list(self.inboxes.items()):
            while inbox.items and inbox.items[0][0] < now:
                inbox.items.popleft()
                self._leave_groups(channel)
            if not inbox.items and not inbox.waiters:
                self.inboxes.pop(channel, None)
        cutoff = now - self.group_expiry
        for group, members in list(self.groups.items()):
            for channel, joined in list(members.items()):
                if joined < cutoff:
                    members.pop(channel, None)
            if not members:
                self.groups.pop(group, None)

    def _leave_groups(self, channel: str) -> None:
        for members in self.groups.values():
            members.pop(channel, None)

    # --- flush extension ---------------------------------------------------------------------

    async def flush(self) -> None:
        self.inboxes = {}
        self.groups = {}

    async def close(self) -> None:
        pass

    # --- groups extension --------------------------------------------------------------------

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        self.groups.setdefault(group, {})[channel] = time.time()

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_channel_name(channel)
        self.require_valid_group_name(group)
        members = self.groups.get(group)
        if members:
            members.pop(channel, None)
            if not members:
                self.groups.pop(group, None)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._maybe_sweep()
        members = self.groups.get(group)
        if not members:
            return
        # One deep copy per broadcast; each member gets its own top-level dict over it.
        shared = copy.deepcopy(message)
        expires = time.time() + self.expiry
        full = 0
        sinks, inboxes = self.sinks, self.inboxes
        for channel in list(members):
            sink = sinks.get(channel)
            if sink is not None:
                inbox = inboxes.get(channel)
                if inbox is not None and inbox.idle and sink(shared):
                    continue
            try:
                self._inbox(channel).put((expires, dict(shared)), channel)
            except ChannelFull:
                full += 1  # at-most-once, like stock: a full channel misses this message
        if full:
            log.warning("group %s: %d full channel(s) missed a message", group, full)
