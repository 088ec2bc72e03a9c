"""channels_redis's pub/sub layer with each push decoded once per process and written at once to
the idle sockets of its group (speedup ``redis_fanout``; README.md here).

Stock ``RedisPubSubChannelLayer`` (channels_redis 4.3) already publishes a group message once
and receives it once per process; but it then puts the raw bytes into every member's
``asyncio.Queue``, and each consumer, on its own turn, wakes its receive task, decodes the
msgpack, goes round Channels' ``await_many_dispatch`` (an ``asyncio.wait`` and a new task) and
dispatches. For a push to N sockets of a process that is N task wake-ups, N decodes and N
dispatches, where the push itself is the same text for all of them.

This layer keeps the stock one whole (subscriptions, publishing, reconnects, the queued path) and
adds what the in-memory layer's ``direct_push`` offers: a consumer may ``attach_sink(channel,
sink)``, and a group message is then decoded once and handed to each member's sink, but only
while that member is idle: its receiver waits in ``receive`` on an empty queue, so nothing of
that channel is queued or in hand, and the sink itself refuses while a handler runs. Any other
member (busy, no sink, a sink that refuses) gets the stock queued bytes, so the order each socket
sees is exactly what the queue alone would give.

Hooks used (channels_redis internals, pinned in ``WRITTEN_FOR``): the outer layer's
``_get_layer`` and ``_layers``, the loop layer's ``channels``/``groups``/``_shards`` and its
``hosts`` argument, and the shard connection's ``_receive_message``, which the receive task
calls with every pub/sub message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close, decode_hosts

from screening.cpu_stages import stage

log = logging.getLogger("screening.speedups.redis_layer")

Sink = Callable[[dict[str, Any]], bool]


class _FanOutShard(RedisSingleShardConnection):
    """One Redis connection's pub/sub receiver, handing group messages to the loop layer."""

    channel_layer: _FanOutLoopLayer

    def _receive_message(self, message: dict[str, Any] | None) -> None:
        if message is not None and self.channel_layer.sinks:
            name = message["channel"]
            if isinstance(name, bytes):
                name = name.decode()
            layer = self.channel_layer
            if name not in layer.channels:
                members = layer.groups.get(name)
                if members:
                    layer.fan_out(members, message["data"])
                    return
        super()._receive_message(message)


class _FanOutLoopLayer(RedisPubSubLoopLayer):
    """The per-event-loop layer: stock, plus sinks and the count of waiting receivers."""

    def __init__(self, hosts: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(hosts, *args, **kwargs)
        self._shards = [_FanOutShard(host, self) for host in decode_hosts(hosts)]
        self.sinks: dict[str, Sink] = {}
        self.receiving: dict[str, int] = {}  # channel -> receivers waiting in receive()

    def attach_sink(self, channel: str, sink: Sink) -> None:
        self.sinks[channel] = sink

    def detach_sink(self, channel: str) -> None:
        self.sinks.pop(channel, None)

    async def receive(self, channel: str) -> Any:
        # Counted for the whole wait: the queue's item is taken and decoded in the same step
        # that returns, so "counted and the queue empty" means nothing of this channel is in hand.
        self.receiving[channel] = self.receiving.get(channel, 0) + 1
        try:
            return await super().receive(channel)
        finally:
            left = self.receiving.get(channel, 1) - 1
            if left > 0:
                self.receiving[channel] = left
            else:
                self.receiving.pop(channel, None)

    @stage("push")  # once per push and process; the sockets' writes are inside it
    def fan_out(self, members: set[str], data: bytes) -> None:
        """Deliver one group message to each member: at once where idle, else queued."""
        channels, sinks, receiving = self.channels, self.sinks, self.receiving
        decoded: dict[str, Any] | None = None
        for name in list(members):
            queue: asyncio.Queue[Any] | None = channels.get(name)
            if queue is None:
                continue
            sink = sinks.get(name)
            if sink is not None and name in receiving and queue.empty():
                if decoded is None:
                    decoded = self.channel_layer.deserialize(data)
                try:
                    if sink(decoded):
                        continue
                except Exception:
                    # The queued path runs the consumer's own handler, which fails its own way.
                    log.exception("direct delivery to %s failed; queued instead", name)
            queue.put_nowait(data)


class FanOutRedisPubSubChannelLayer(RedisPubSubChannelLayer):
    """``RedisPubSubChannelLayer`` whose per-loop layer fans group messages out as above."""

    def _get_layer(self) -> _FanOutLoopLayer:
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = _FanOutLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer
