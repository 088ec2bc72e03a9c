"""The PBX WebSocket subscriber: subscribe, heartbeat, reconnect, and hand events to the intake.

One listener per PBX (docs/pbx.md): it runs inside `serve`/`demo` (embedded) or alone as
`pbx_listen` (scale-out, with Redis carrying the pushes to the web processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp

from screening.pbx import link
from screening.pbx.client import (
    PbxAuthError,
    PbxClient,
    PbxError,
    PbxTransportError,
    show_time,
)
from screening.pbx.events import (
    Event,
    EventError,
    HeartbeatResponse,
    SubscribeAck,
    parse_frame,
)
from screening.runtime import run_blocking

log = logging.getLogger("screening.pbx.listener")

TOPICS = (30016, 30011, 30012)
# How a PBX turns a bad token away at the WebSocket is undocumented: an HTTP status, a JSON
# errcode frame instead of the subscribe ack, or a close are all plausible. So after this many
# failed handshakes in a row, of any of those kinds, the shared token is dropped and renewed.
HANDSHAKE_FAILURES_BEFORE_RENEWAL = 3
# At most one such renewal per this long: if the new token fails too, the fault is not the
# token, and a renewal every few seconds would fill the PBX's 8-token cap.
HANDSHAKE_RENEWAL_GAP = 300.0
# Calls whose events are handled at once (each holds a worker-pool thread while it runs).
MAX_CONCURRENT_EVENTS = 16
Handler = Callable[[Event, datetime], Awaitable[None]]  # (event, when its frame arrived)
# Told when the listener starts (link.CONNECTING), when the link goes from up to not up
# (link.DOWN) and when it is up (subscribed) again (link.UP), with the moment: what the PBX
# offered in between was never seen (screening.calls.reconcile).
LinkHook = Callable[[str, datetime], Awaitable[None]]


class LinkDead(Exception):
    """The socket is open but the PBX stopped answering heartbeats."""


class PbxListener:
    def __init__(
        self,
        client: PbxClient,
        handler: Handler,
        *,
        heartbeat: float = 20.0,
        verify: bool | str = True,
        backoff_base: float = 0.2,
        backoff_cap: float = 1.5,
        auth_retry: float = 30.0,
        renewal_gap: float = HANDSHAKE_RENEWAL_GAP,
        on_link: LinkHook | None = None,
    ) -> None:
        self.client = client
        self.handler = handler
        self.heartbeat = heartbeat
        # A PBX that does not answer a heartbeat within this is treated as gone (its own idle cut
        # is 60 s; we want to know much sooner).
        self.heartbeat_timeout = min(max(2 * heartbeat, 1.0), 10.0)
        self.verify = verify
        # Capped low on purpose: the listener must be back within ~2 s of the PBX returning, and
        # a reconnect attempt with a cached token costs the PBX only a TCP handshake.
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.auth_retry = auth_retry
        self.renewal_gap = renewal_gap
        self._failed_handshakes = 0
        self._renewed_at: float | None = None  # monotonic time of the last renewal they forced
        self.on_link = on_link
        self.connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def run(self) -> None:
        attempt = 0
        await self._set_state(link.CONNECTING)
        await self._tell(link.CONNECTING)
        async with aiohttp.ClientSession(headers={"User-Agent": self.client.user_agent}) as session:
            while not self._stopping.is_set():
                try:
                    await self._connect_once(session)
                    attempt = 0
                    reason = "the PBX closed the connection"
                except PbxAuthError as exc:
                    detail = f"{exc.errcode} {exc.errmsg}"
                    wait = self.auth_retry
                    if exc.blocked_until is not None:
                        detail += f", blocked until {show_time(exc.blocked_until)}"
                        # The lockout ends with the block (within the client's bounds): look
                        # again then, not up to auth_retry later.
                        wait = min(wait, max(0.1, exc.blocked_until - time.time() + 0.5))
                    log.error("PBX authentication failed: %s; not retrying", detail)
                    await self._set_state(link.AUTH_FAILED, detail, blocked_until=exc.blocked_until)
                    await self._lost()
                    await self._sleep(wait)
                    continue
                except (
                    PbxError,
                    PbxTransportError,
                    LinkDead,
                    aiohttp.ClientError,
                    OSError,
                    TimeoutError,
                    ValueError,
                ) as exc:
                    reason = _describe(exc)
                except Exception as exc:
                    # e.g. Redis restarting under the shared token cache: the listener is the only
                    # way calls get screened, so it must outlive any one failure and retry.
                    log.exception("PBX listener: unexpected failure; reconnecting")
                    reason = _describe(exc)
                await self._lost()
                if self._stopping.is_set():
                    break
                log.warning("PBX link down: %s", reason)
                await self._set_state(link.DOWN, reason)
                delay = min(self.backoff_cap, self.backoff_base * 2**attempt)
                attempt += 1
                await self._sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)

    async def stop(self) -> None:
        self._stopping.set()
        if self._ws is not None:
            await self._ws.close()

    async def _lost(self) -> None:
        if self.connected.is_set():
            self.connected.clear()
            await self._tell(link.DOWN)

    async def _tell(self, state: str) -> None:
        if self.on_link is None:
            return
        try:
            await self.on_link(state, datetime.now(UTC))
        except Exception:
            # Outage bookkeeping must never cost the link: the listener start covers a lost one.
            log.exception("recording the PBX link going %s failed", state)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _set_state(
        self, state: str, detail: str = "", *, blocked_until: float | None = None
    ) -> None:
        try:
            await run_blocking(link.set_state, state, detail, blocked_until=blocked_until)
        except Exception as exc:
            # The link state is advisory (banner, /healthz): a cache outage must not cut the link.
            log.warning("could not record the PBX link state %r: %s", state, exc)

    # --- one connection -------------------------------------------------------------------

    async def _connect_once(self, session: aiohttp.ClientSession) -> None:
        token = await run_blocking(self.client.access_token)
        url = self.client.websocket_url(token)
        try:
            ws = await session.ws_connect(
                url,
                ssl=self._ssl(),
                autoping=True,
                heartbeat=None,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                max_msg_size=1024 * 1024,
            )
        except Exception as exc:
            if _turned_away(exc):
                await self._handshake_failed(token)
            raise
        self._ws = ws
        try:
            try:
                await self._subscribe(ws)
            except (PbxError, LinkDead, aiohttp.ClientError, ConnectionError):
                # An errcode frame instead of the ack, or the socket closed before it.
                await self._handshake_failed(token)
                raise
            self._failed_handshakes = 0
            await self._set_state(link.UP)
            self.connected.set()
            await self._tell(link.UP)
            log.info("PBX link up (%s)", self.client.base_url)
            await self._pump(ws)
        finally:
            self._ws = None
            await ws.close()

    async def _handshake_failed(self, token: str) -> None:
        """Count a handshake the PBX turned away; the third in a row drops the shared token so
        the next attempt gets a new one (refresh_token first, so usually no login at all)."""
        self._failed_handshakes += 1
        if self._failed_handshakes < HANDSHAKE_FAILURES_BEFORE_RENEWAL:
            return
        now = time.monotonic()
        if self._renewed_at is not None and now - self._renewed_at < self.renewal_gap:
            return  # renewed lately and still refused: keep the token, keep backing off
        log.warning(
            "the PBX turned away %d WebSocket handshakes in a row: renewing the token",
            self._failed_handshakes,
        )
        self._failed_handshakes = 0
        self._renewed_at = now
        await run_blocking(self.client.forget_token, token)

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.verify is False:
            return False
        if isinstance(self.verify, str):
            return ssl.create_default_context(cafile=self.verify)
        return True

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        await ws.send_str(json.dumps({"topic_list": list(TOPICS)}))
        msg = await asyncio.wait_for(ws.receive(), timeout=5.0)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise LinkDead(f"no subscribe answer (got {msg.type.name})")
        frame = parse_frame(msg.data)
        if not isinstance(frame, SubscribeAck):
            raise LinkDead("the PBX did not acknowledge the subscription")
        if frame.errcode != 0:
            raise PbxError(frame.errcode, frame.errmsg, "subscribe")

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # Events are handled in arrival order by one worker, so a call's 30011 never overtakes
        # its 30016; the reader stays free to see heartbeat answers meanwhile.
        queue: asyncio.Queue[tuple[Event, datetime]] = asyncio.Queue()
        self._last_answer = time.monotonic()
        worker = asyncio.create_task(self._work(queue), name="pbx-events")
        reader = asyncio.create_task(self._reader(ws, queue), name="pbx-reader")
        beats = asyncio.create_task(self._heartbeats(ws), name="pbx-heartbeat")
        try:
            done, _ = await asyncio.wait({reader, beats}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            beats.cancel()
            await _drain(queue, worker)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _reader(
        self, ws: aiohttp.ClientWebSocketResponse, queue: asyncio.Queue[tuple[Event, datetime]]
    ) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self._read(msg.data, queue)

    def _read(self, text: str, queue: asyncio.Queue[tuple[Event, datetime]]) -> None:
        try:
            frame = parse_frame(text)
        except EventError as exc:
            log.warning("malformed frame from the PBX ignored: %s", exc)
            return
        if isinstance(frame, HeartbeatResponse):
            self._last_answer = time.monotonic()
        elif isinstance(frame, SubscribeAck):
            if frame.errcode != 0:
                log.warning("PBX answered %s %s", frame.errcode, frame.errmsg)
        else:
            queue.put_nowait((frame, datetime.now(UTC)))

    async def _heartbeats(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        # Send on a fixed period (the PBX's idle cut counts our silence) and, independently,
        # give up on the link when the oldest unanswered heartbeat is older than the timeout.
        tick = min(self.heartbeat, self.heartbeat_timeout / 2)
        last_sent = time.monotonic()  # the subscription itself was traffic
        unanswered_since: float | None = None
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if unanswered_since is not None:
                if self._last_answer >= unanswered_since:
                    unanswered_since = None
                    await self._touch()
                elif now - unanswered_since >= self.heartbeat_timeout:
                    raise LinkDead(f"no heartbeat response within {self.heartbeat_timeout:g} s")
            if now - last_sent >= self.heartbeat:
                await ws.send_str("heartbeat")
                last_sent = now
                if unanswered_since is None:
                    unanswered_since = now

    async def _touch(self) -> None:
        try:
            await run_blocking(link.touch, link.UP)
        except Exception as exc:
            log.warning("could not refresh the PBX link state: %s", exc)

    async def _work(self, queue: asyncio.Queue[tuple[Event, datetime]]) -> None:
        # Pipelined: events of one call are handled in arrival order (its 30011/30012 never
        # overtake its 30016), different calls concurrently in the worker pool, so a burst of
        # N calls no longer queues each call's database work behind all the others.
        tails: dict[str, asyncio.Task[None]] = {}
        lanes = asyncio.Semaphore(MAX_CONCURRENT_EVENTS)
        while True:
            event, arrived = await queue.get()
            key = str(getattr(event, "call_id", "") or "")  # no call id: one shared lane
            task = asyncio.create_task(
                self._handle(event, arrived, tails.get(key), queue, lanes), name=f"pbx-event-{key}"
            )
            tails[key] = task
            task.add_done_callback(lambda t, key=key: tails.get(key) is t and tails.pop(key))

    async def _handle(
        self,
        event: Event,
        arrived: datetime,
        previous: asyncio.Task[None] | None,
        queue: asyncio.Queue[tuple[Event, datetime]],
        lanes: asyncio.Semaphore,
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])  # its outcome is its own; only the order matters
            async with lanes:
                await self.handler(event, arrived)
        except Exception:
            # One bad event must not stop the link; the audit keeps what was recorded.
            log.exception("handling PBX event %s failed", type(event).__name__)
        finally:
            queue.task_done()


async def _drain(queue: asyncio.Queue[tuple[Event, datetime]], worker: asyncio.Task[None]) -> None:
    """Finish the events already received before the socket went away, then stop the worker."""
    try:
        await asyncio.wait_for(queue.join(), timeout=5.0)
    except TimeoutError:
        log.error("%d PBX events were still queued when the link closed", queue.qsize())
    worker.cancel()


def _turned_away(exc: BaseException) -> bool:
    """The PBX answered the WebSocket handshake and refused it (an HTTP status, or the
    connection closed under it). Not: the PBX unreachable or slow, which no new token fixes."""
    if isinstance(exc, aiohttp.WSServerHandshakeError | aiohttp.ServerDisconnectedError):
        return True
    return isinstance(exc, aiohttp.ClientOSError) and not isinstance(
        exc, aiohttp.ClientConnectorError
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"WebSocket refused (HTTP {exc.status})"
    if isinstance(exc, PbxError):
        return f"PBX answered {exc.errcode} {exc.errmsg}"
    if isinstance(exc, PbxTransportError):
        return exc.reason
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text[:200]
