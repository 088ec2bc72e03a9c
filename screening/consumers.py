"""The operator WebSocket: a snapshot on connect, then pre-encoded pushes forwarded as they are."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import AbstractBaseUser

from screening.calls import presence, push
from screening.calls.access import streams_for, visible_trunks
from screening.calls.payload import call_payload
from screening.models import OPEN_STATUSES, Call
from screening.pbx import link
from screening.runtime import run_blocking
from screening.speedups.consumer import PushConsumerMixin
from screening.speedups.framing import send_prepared

log = logging.getLogger("screening.consumers")

RECENT_LIMIT = 10
MAX_CLIENT_MESSAGE = 2048
CLOSE_FORBIDDEN = 4403


def build_snapshot(user: AbstractBaseUser, streams: list[str]) -> str:
    # Read the sequence numbers before the database: a push racing with this snapshot then has a
    # higher number and is applied on top, never lost.
    seqs = {stream: push.current_seq(stream) for stream in streams}
    base = Call.objects.select_related("trunk", "decided_by").filter(visible_trunks(user))
    open_calls = list(base.filter(status__in=OPEN_STATUSES).order_by("deadline"))
    recent = list(base.exclude(status__in=OPEN_STATUSES).order_by("-finished_at")[:RECENT_LIMIT])
    body = {
        "type": "snapshot",
        "seq": seqs,
        "server_time": push.now_ms(),
        "calls": [call_payload(c) for c in open_calls],
        "recent": [call_payload(c) for c in recent],
        "link": link.get_state(),
    }
    return json.dumps(body, separators=(",", ":"), default=str)


class OperatorConsumer(PushConsumerMixin, AsyncWebsocketConsumer):
    # Pushes only forward pre-encoded text: no close_old_connections thread hop per push.
    orm_free_handlers = frozenset({push.PUSH_HANDLER})
    direct_handlers = {push.PUSH_HANDLER: "push_now"}
    user: AbstractBaseUser
    streams: list[str]
    presence_at: float = 0.0  # monotonic time of the last presence write

    async def connect(self) -> None:
        user = self.scope.get("user")
        if (
            user is None
            or not user.is_authenticated
            or not await run_blocking(user.has_perm, "screening.decide_call")
        ):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.user = user
        self.streams = await run_blocking(streams_for, user)
        for stream in self.streams:
            await self.channel_layer.group_add(stream, self.channel_name)
        await self.accept()
        self.attach_direct()
        await run_blocking(presence.join, user, self.channel_name)
        self.presence_at = time.monotonic()
        await self.send_snapshot()

    async def disconnect(self, code: int) -> None:
        self.detach_direct()
        for stream in getattr(self, "streams", []):
            await self.channel_layer.group_discard(stream, self.channel_name)
        if self.presence_at:
            await run_blocking(presence.leave, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        message = _parse_client_message(text_data)
        kind = message.get("type") if message else None
        if kind == "snapshot":
            await self.send_snapshot()
        elif kind == "ping":
            await self._refresh_presence()
            t = message.get("t") if message else None
            await self.send(
                text_data=json.dumps(
                    {
                        "type": "pong",
                        "t": _client_time(t),
                        "server_time": push.now_ms(),
                    }
                )
            )
        else:
            await self.send(text_data=json.dumps({"type": "error", "error": "unknown message"}))

    async def _refresh_presence(self) -> None:
        # Pings come every 10 s; writing every REFRESH_EVERY keeps the row well inside the TTL.
        if time.monotonic() - self.presence_at >= presence.REFRESH_EVERY:
            self.presence_at = time.monotonic()
            await run_blocking(presence.refresh, self.channel_name, self.user)

    async def send_snapshot(self) -> None:
        snapshot = await run_blocking(build_snapshot, self.user, self.streams)
        await self.send(text_data=snapshot)

    def push_now(self, event: dict[str, Any]) -> bool:
        """A push, written at once by the layer when this consumer is idle (speedups.layer)."""
        return send_prepared(self.scope, event["text"])

    async def push_message(self, event: dict[str, Any]) -> None:
        if not send_prepared(self.scope, event["text"]):  # framed once for all (speedups.framing)
            await self.send(text_data=event["text"])


def _client_time(t: Any) -> float | int | None:
    """Echo the browser's clock reading only if it is a plain finite number: NaN, Infinity (which
    json.loads accepts) or a 400-digit integer would make our pong invalid JSON for the browser."""
    if isinstance(t, bool) or not isinstance(t, int | float):
        return None
    return t if abs(t) < 1e16 and t == t else None


def _parse_client_message(text: str | None) -> dict[str, Any] | None:
    if not text or len(text) > MAX_CLIENT_MESSAGE:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
