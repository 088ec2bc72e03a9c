"""The operator WebSocket: a snapshot on connect, then pre-encoded pushes forwarded as they are.

When the channel layer may have lost pushes (Redis went away), the layer watchdog
(``screening.health``) tells every socket of this process to resync, through its own registry;
the browser answers by asking for a snapshot. A socket that cannot get a snapshot or join its
streams (Redis or the database down) is closed with ``CLOSE_UNAVAILABLE``, and the browser
comes back with its usual backoff.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.contrib.auth.models import AbstractBaseUser

from screening import health, metrics
from screening.calls import presence, push, sessions
from screening.calls.access import visible_trunks
from screening.calls.payload import call_payload
from screening.cpu_stages import stage
from screening.models import OPEN_STATUSES, Call
from screening.pbx import link
from screening.runtime import run_blocking
from screening.speedups.consumer import PushConsumerMixin
from screening.speedups.framing import send_prepared

log = logging.getLogger("screening.consumers")

RECENT_LIMIT = 10
MAX_CLIENT_MESSAGE = 2048
CLOSE_FORBIDDEN = sessions.CLOSE_FORBIDDEN
CLOSE_UNAVAILABLE = 4503  # shared state unreachable for now: reconnect later
RESYNC = json.dumps({"type": "resync"})


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
    user_group: str | None = None  # sessions.user_group: access.changed messages for this user
    presence_at: float = 0.0  # monotonic time of the last presence write
    visible = True  # the page is on screen, as the browser last reported (Page Visibility API)
    closing = False  # access ended: nothing more is sent, the close is on its way
    counted = False  # in the open-sockets gauge (admitted), until it leaves

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except health.UNAVAILABLE as exc:
            if getattr(self, "channel_name", None):
                raise  # failed later, in a handler: not the handshake's to answer
            # The layer could not even give this socket a channel (Redis down, the pub/sub layer
            # subscribes it at once): refuse it with the code the browser retries on, rather
            # than the handshake's 500.
            log.warning("operator socket refused for now, no channel from the layer: %s", exc)
            await receive()  # websocket.connect
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_UNAVAILABLE})

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(sessions.CLOSE_SIGNED_OUT)
            return
        try:
            # Joined before the check: a change committed after the check reaches this socket.
            self.user_group = sessions.user_group(user.pk)
            await self.channel_layer.group_add(self.user_group, self.channel_name)
            access = await self._check(user.pk)
            if access.close_code is not None:
                await self.channel_layer.group_discard(self.user_group, self.channel_name)
                await self._refuse(access.close_code)
                return
            self.user = access.user
            self.streams = access.streams
            for stream in self.streams:
                await self.channel_layer.group_add(stream, self.channel_name)
        except health.UNAVAILABLE as exc:
            log.warning("operator socket refused for now, cannot join its groups: %s", exc)
            await self._refuse(CLOSE_UNAVAILABLE)
            return
        await self.accept()
        metrics.socket_opened()
        self.counted = True
        # From now on a push the layer may have lost is answered by a resync order; one lost
        # before is covered by the snapshot below.
        health.layer_watchdog.register(self)
        self.attach_direct()
        await run_blocking(presence.join, self.user, self.channel_name)
        self.presence_at = time.monotonic()
        await self.send_snapshot()

    async def _refuse(self, code: int) -> None:
        # Accepted, then closed with a code: a refused handshake reaches the browser only as
        # 1006, and the dashboard could not tell "signed out" from "server down".
        self.closing = True
        await self.accept()
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def _leave(self) -> None:
        """Out of every group and off the presence list (idempotent)."""
        if self.counted:
            self.counted = False
            metrics.socket_closed()
        health.layer_watchdog.unregister(self)
        self.detach_direct()
        groups = [*getattr(self, "streams", []), getattr(self, "user_group", None)]
        self.streams = []
        self.user_group = None
        for group in groups:
            if group is None:
                continue
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except health.UNAVAILABLE as exc:  # Redis down: its subscription went with it
                log.info("group_discard(%s) failed: %s", group, exc)
        if self.presence_at:
            self.presence_at = 0.0
            await run_blocking(presence.leave, self.channel_name)

    async def _check(
        self, user_pk: Any, refresh: str | None = None, visible: bool | None = None
    ) -> sessions.Access:
        session = self.scope.get("session")
        key = session.session_key if session is not None else None
        return await run_blocking(
            sessions.check,
            key,
            user_pk,
            has_session=session is not None,
            refresh=refresh,
            visible=visible,
        )

    async def _end(self, code: int) -> None:
        log.info("closing the socket of %s: access ended (%s)", self.user.get_username(), code)
        self.closing = True
        await self._leave()
        await self.close(code=code)

    async def access_changed(self, event: dict[str, Any]) -> None:
        """The user's access may have changed (calls.sessions): check again, then close, or
        follow the new streams with a fresh snapshot."""
        if self.closing:
            return
        session = self.scope.get("session")
        ended = event.get("ended_session")
        if ended and session is not None and ended == sessions.session_tag(session.session_key):
            await self._end(sessions.CLOSE_SIGNED_OUT)  # logged out, in this tab or another
            return
        await self._follow(await self._check(self.user.pk), snapshot=bool(event.get("trunks")))

    async def _follow(self, access: sessions.Access, snapshot: bool) -> None:
        """Close, or carry on as the user is now: their streams, and a snapshot if those changed
        (or ``snapshot``: which calls they may see changed)."""
        if access.close_code is not None:
            await self._end(access.close_code)
            return
        self.user = access.user
        old, new = set(self.streams), set(access.streams)
        for stream in new - old:
            await self.channel_layer.group_add(stream, self.channel_name)
        for stream in old - new:
            await self.channel_layer.group_discard(stream, self.channel_name)
        self.streams = access.streams
        if old != new or snapshot:
            await self.send_snapshot()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        message = _parse_client_message(text_data)
        kind = message.get("type") if message else None
        if self.closing:
            return
        if kind == "snapshot":
            await self.send_snapshot()
        elif kind == "visibility":
            await self._set_visible(message)
        elif kind == "ping":
            await self._refresh_presence()
            if self.closing:
                return
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

    async def _set_visible(self, message: dict[str, Any] | None) -> None:
        """The dashboard was shown or hidden: counts as online (or stops) at once, not at the
        next ping. A malformed report changes nothing; only a change is written."""
        visible = _visibility(message)
        if visible is None:
            log.info(
                "ignored a malformed visibility report from %s: %.200r",
                self.user.get_username(),
                message,
            )
            return
        if visible == self.visible or not self.presence_at:  # no change, or off the list
            return
        self.visible = visible
        self.presence_at = time.monotonic()
        await run_blocking(presence.set_visible, self.channel_name, self.user, visible)

    async def _refresh_presence(self) -> None:
        # Pings come every 10 s; writing every REFRESH_EVERY keeps the row well inside the TTL.
        # The same hop checks the session again: a lost access.changed message, or a session
        # that expired, still ends the socket.
        if time.monotonic() - self.presence_at >= presence.REFRESH_EVERY:
            self.presence_at = time.monotonic()
            access = await self._check(self.user.pk, self.channel_name, self.visible)
            await self._follow(access, False)

    async def send_snapshot(self) -> None:
        try:
            snapshot = await run_blocking(build_snapshot, self.user, self.streams)
        except health.UNAVAILABLE as exc:
            # No truth to send (the sequence numbers live in the cache): a socket showing stale
            # calls as live would be worse than one that says it is reconnecting.
            log.warning("no snapshot for an operator socket, closing it: %s", exc)
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        await self.send(text_data=snapshot)

    async def resync(self) -> None:
        """Pushes to this socket may have been lost: the browser asks for a snapshot."""
        if not self.closing:
            await self.send(text_data=RESYNC)

    # Not a stage of its own: it runs once per socket, inside the layer's fan-out, which is
    # timed once per push (a stage entry per socket would cost more than the write it times).
    def push_now(self, event: dict[str, Any]) -> bool:
        """A push, written at once by the layer when this consumer is idle (speedups.layer)."""
        return self.closing or send_prepared(self.scope, event["text"])

    @stage("push")
    async def push_message(self, event: dict[str, Any]) -> None:
        if self.closing:
            return
        if not send_prepared(self.scope, event["text"]):  # framed once for all (speedups.framing)
            await self.send(text_data=event["text"])


def _client_time(t: Any) -> float | int | None:
    """Echo the browser's clock reading only if it is a plain finite number: NaN, Infinity (which
    json.loads accepts) or a 400-digit integer would make our pong invalid JSON for the browser."""
    if isinstance(t, bool) or not isinstance(t, int | float):
        return None
    return t if abs(t) < 1e16 and t == t else None


def _visibility(message: dict[str, Any] | None) -> bool | None:
    """``{"type": "visibility", "visible": true|false}``: the bool, or None for anything else
    (a string, a number, a missing field: JSON's ``1`` is not ``true``)."""
    value = message.get("visible") if message else None
    return value if isinstance(value, bool) else None


def _parse_client_message(text: str | None) -> dict[str, Any] | None:
    if not text or len(text) > MAX_CLIENT_MESSAGE:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
