"""Consumer side of the push path (speedups ``no_dispatch_hop`` and ``direct_push``; README.md
here), through the hook Channels documents for it: ``dispatch``, as its own ``SyncConsumer``
overrides it.

Stock ``AsyncConsumer.dispatch`` runs ``aclose_old_connections`` (a hop to the sync worker
thread) before *every* message: one thread hop per push per socket. Handlers listed in
``orm_free_handlers`` touch no database, so with ``no_dispatch_hop`` on they skip it; every
other message goes through the stock ``dispatch`` unchanged.

``attach_direct`` offers the layer (``screening.speedups.layer`` in one process,
``screening.speedups.redis_layer`` over Redis) a sink for the message types in
``direct_handlers``: synchronous methods that take a push at once. The sink refuses while any
handler of this consumer runs, so pushes never overtake the message being handled.
"""

from __future__ import annotations

from typing import Any, ClassVar

from channels.consumer import get_handler_name

from screening import speedups


class PushConsumerMixin:
    """Mix in before ``AsyncWebsocketConsumer``."""

    orm_free_handlers: ClassVar[frozenset[str]] = frozenset()
    # message type -> name of a synchronous method taking it at once, True if it did
    direct_handlers: ClassVar[dict[str, str]] = {}
    _handling = 0  # handlers of this consumer running now (0 or 1: Channels runs them in turn)

    # Set by AsyncConsumer; declared for the type checker.
    channel_layer: Any
    channel_name: str

    async def dispatch(self, message: dict[str, Any]) -> None:
        self._handling += 1
        try:
            if message["type"] in self.orm_free_handlers and speedups.enabled("no_dispatch_hop"):
                handler = getattr(self, get_handler_name(message), None)
                if handler is None:
                    raise ValueError(f"No handler for message type {message['type']}")
                await handler(message)
            else:
                await super().dispatch(message)  # type: ignore[misc]  # stock: hop, then handler
        finally:
            self._handling -= 1

    def attach_direct(self) -> None:
        """Let the layer hand ``direct_handlers`` messages to this consumer while it is idle."""
        attach = getattr(self.channel_layer, "attach_sink", None)
        if attach is None or not self.direct_handlers:
            return  # a layer without sinks, or nothing to take directly: stock queueing
        direct = self.direct_handlers

        def take_now(message: dict[str, Any]) -> bool:
            name = direct.get(message.get("type", ""))
            if name is None or self._handling:
                return False  # a handler is running: queue behind it, keeping the order
            return bool(getattr(self, name)(message))

        attach(self.channel_name, take_now)

    def detach_direct(self) -> None:
        detach = getattr(self.channel_layer, "detach_sink", None)
        if detach is not None:
            detach(self.channel_name)
