"""Small consumers for testing the push path's speedups in isolation."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer

from screening.speedups.consumer import PushConsumerMixin


class EchoConsumer(PushConsumerMixin, AsyncWebsocketConsumer):
    orm_free_handlers = frozenset({"push.message"})

    async def connect(self) -> None:
        await self.channel_layer.group_add("ops", self.channel_name)
        await self.accept()
        self.attach_direct()
        await self.send(text_data="snapshot")

    async def disconnect(self, code: int) -> None:
        self.detach_direct()
        await self.channel_layer.group_discard("ops", self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo:{text_data}")

    async def push_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


class DirectConsumer(EchoConsumer):
    """Takes pushes at once when idle (direct_handlers); "slow" holds a handler open."""

    direct_handlers: ClassVar[dict[str, str]] = {"push.message": "push_now"}
    release: asyncio.Event
    taken_directly: list[str]

    def push_now(self, event: dict[str, Any]) -> bool:
        type(self).taken_directly.append(event["text"])
        # The communicator's output queue: written synchronously, as a socket write would be.
        self.base_send.__self__.put_nowait({"type": "websocket.send", "text": event["text"]})  # type: ignore[attr-defined]
        return True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "slow":
            await type(self).release.wait()
        await self.send(text_data=f"done:{text_data}")
