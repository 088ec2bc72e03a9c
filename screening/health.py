"""What this process knows about the services it shares with the others, for /healthz and for
the browsers: the channel layer, watched end to end, and the errors an outage of Redis or the
database raises.

Channel layers are at-most-once and say nothing when they lose a push: channels_redis's pub/sub
layer keeps its subscription in a background task that, after Redis comes back, takes up to a
second to subscribe again, while ``group_send`` already succeeds. So "``group_send`` did not raise"
is not health. The watchdog instead sends a probe through the layer to a group of this process's
own every ``PROBE_INTERVAL`` and receives it like a consumer would. Any failure (a probe not back
within ``PROBE_TIMEOUT``, the layer raising, a push that could not be sent) marks the layer down;
when a probe sent after the failure comes back, every local operator socket is told to resync
(pushes meanwhile may have been lost) and only then is the layer reported ok again.

The sockets are reached through a registry in this process, never through the layer that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
import weakref
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.db import DatabaseError
from redis import RedisError

from screening import runtime

log = logging.getLogger("screening.health")

# What an outage of the shared services raises: Redis (cache and channel layer), the database,
# and the sockets under them. Paths that read shared state catch these and degrade, never 500.
# What a cache (Redis) that cannot be reached raises: redis-py's errors, and the operating
# system's for a socket that fails below it.
CACHE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)
UNAVAILABLE: tuple[type[BaseException], ...] = (*CACHE_ERRORS, DatabaseError)

OK = "ok"
STARTING = "starting"
DOWN = "down"

PROBE_INTERVAL = 0.5
# Generous on purpose: a probe late only because the event loop was busy (a large broadcast)
# would cost every browser a needless snapshot.
PROBE_TIMEOUT = 2.0
PROBE = "layer.probe"


class Resyncable(Protocol):
    """A local socket that can be told its pushes may have been lost."""

    async def resync(self) -> None: ...


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class LayerWatchdog:
    def __init__(self, interval: float = PROBE_INTERVAL, timeout: float = PROBE_TIMEOUT) -> None:
        self.interval = interval
        self.timeout = timeout
        self.state = STARTING
        self.reason = "no probe has come back through the channel layer yet"
        self.since = time.time()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._settled: asyncio.Event | None = None
        self._lock = threading.Lock()  # push failures are reported from worker threads
        self._sent = 0  # number of the last probe sent
        self._outstanding: dict[int, float] = {}  # probe number -> monotonic time sent
        self._lost_up_to = 0  # a probe must be newer than this to prove the layer works again
        self._resync_due = False
        self._sockets: weakref.WeakSet[Any] = weakref.WeakSet()
        self.resyncs = 0  # resync rounds done, for the log and the tests

    # --- the sockets -----------------------------------------------------------------------

    def register(self, socket: Resyncable) -> None:
        self._sockets.add(socket)

    def unregister(self, socket: Resyncable) -> None:
        self._sockets.discard(socket)

    # --- state -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.loop is not None and self.loop.is_running() and not self.loop.is_closed()

    def failed(self, reason: str) -> None:
        """Something may have been lost on the layer: resync once it works again. Any thread."""
        with self._lock:
            self._lost_up_to = self._sent
            self._resync_due = True
            self._outstanding.clear()
            was = self.state
            self.reason = reason
            if was != DOWN:
                self.state = DOWN
                self.since = time.time()
        if was != DOWN:
            log.warning("channel layer down: %s", reason)
            self._settle()

    def status(self) -> tuple[str, str]:
        """(state word, reason) for /healthz; a process that never started it says so."""
        if not self.running:
            return STARTING, "the channel layer watchdog is not running in this process"
        return self.state, self.reason if self.state != OK else ""

    async def settled(self, within: float) -> None:
        """Wait (up to ``within``) for the first verdict of a process that has just started."""
        if self._settled is None or not self.running or self.state != STARTING:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), within)

    def _settle(self) -> None:
        loop, event = self.loop, self._settled
        if event is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    # --- the probe loop ------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None] | None:
        """Start watching on the running loop (``screening.startup.start``), once per loop;
        returns the task it started."""
        loop = asyncio.get_running_loop()
        if self.loop is loop:
            return None
        with self._lock:  # nothing proven on this loop yet
            self.state, self.since = STARTING, time.time()
            self.reason = "no probe has come back through the channel layer yet"
            self._outstanding.clear()
            self._lost_up_to = self._sent
        self.loop = loop
        self._settled = asyncio.Event()
        return runtime.spawn(self.run(), "layer-watchdog")

    async def run(self) -> None:
        layer = get_channel_layer()
        group = f"layer-watchdog.{uuid.uuid4().hex}"
        channel: str | None = None
        last_tick = time.monotonic()
        while True:
            try:
                if channel is None:
                    channel = await asyncio.wait_for(layer.new_channel(), self.timeout)
                    runtime.spawn(self._receive(layer, channel), "layer-watchdog-receive")
                # Joined again every time: cheap, and a membership the layer expired or lost
                # with a restarted Redis comes back.
                await asyncio.wait_for(layer.group_add(group, channel), self.timeout)
                with self._lock:
                    self._sent += 1
                    number = self._sent
                    self._outstanding[number] = time.monotonic()
                await asyncio.wait_for(
                    layer.group_send(group, {"type": PROBE, "n": number}), self.timeout
                )
            except Exception as exc:
                self.failed(f"the channel layer failed: {describe(exc)}")
            await asyncio.sleep(self.interval)
            now = time.monotonic()
            # A loop that stalled longer than the probe's margin has not run the receiver
            # either: judge lateness only on a tick that came roughly on time.
            if now - last_tick < self.interval + self.timeout / 2:
                self._check_overdue(now)
            last_tick = now

    def _check_overdue(self, now: float) -> None:
        with self._lock:
            oldest = min(self._outstanding.values(), default=now)
        if now - oldest > self.timeout:
            self.failed(
                f"a probe sent through the channel layer did not come back in {self.timeout:g} s"
            )

    async def _receive(self, layer: Any, channel: str) -> None:
        while True:
            try:
                message = await layer.receive(channel)
            except Exception as exc:
                self.failed(f"receiving from the channel layer failed: {describe(exc)}")
                await asyncio.sleep(self.interval)
                continue
            if message.get("type") == PROBE and isinstance(message.get("n"), int):
                await self._probe_back(message["n"])

    async def _probe_back(self, number: int) -> None:
        with self._lock:
            for sent in [n for n in self._outstanding if n <= number]:
                del self._outstanding[sent]
            if self.state == OK or number <= self._lost_up_to:
                return  # healthy already, or a probe from before the failure: proves nothing
            resync = self._resync_due
            self._resync_due = False
        if resync:
            await self._resync_all()
        with self._lock:
            if number <= self._lost_up_to:
                return  # it failed again while the sockets were being told
            was = self.state
            self.state, self.reason, self.since = OK, "", time.time()
        self._settle()
        if was == DOWN:
            log.warning("channel layer receiving again; local operator sockets told to resync")

    async def _resync_all(self) -> None:
        sockets = list(self._sockets)
        self.resyncs += 1
        results = await asyncio.gather(*(s.resync() for s in sockets), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            log.info("resync: %d of %d sockets could not be told", len(failures), len(sockets))


layer_watchdog = LayerWatchdog()
