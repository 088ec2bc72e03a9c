"""Pushing state changes to operator browsers through the channel layer.

Every message is encoded to JSON once per event (not once per operator) and carries a per-stream
sequence number, so a browser that sees a gap asks for a snapshot. Channel layers are at-most-once;
the snapshot and the database are the truth, a push is only a fast hint. A push that could not be
sent (Redis down: no sequence number, or the layer raised) never fails the change it announces:
it is logged and reported to the layer watchdog (``screening.health``), which makes every browser
resync once the layer works again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache

from screening import health, metrics
from screening.cpu_stages import stage

log = logging.getLogger("screening.calls.push")

OPERATORS = "operators"
PUSH_HANDLER = "push.message"  # the consumer method `push_message` forwards the pre-encoded text

_main_loop: asyncio.AbstractEventLoop | None = None
_seq_lock = threading.Lock()


def register_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Remember the server's event loop: the in-memory layer only works on the loop it serves."""
    global _main_loop
    _main_loop = loop


def now_ms() -> int:
    return int(time.time() * 1000)


def _seq_key(stream: str) -> str:
    return f"push-seq:{stream}"


def _seq_start() -> int:
    # A counter lost with the cache (Redis restarted) must not start again below the numbers
    # browsers already hold, or they would take new pushes for stale ones and never resync.
    # Starting at the clock in ms stays above them while pushes average under 1000 a second.
    return now_ms()


def next_seq(stream: str) -> int:
    """A sequence number shared by every process (the cache is Redis in the scale-out setup)."""
    key = _seq_key(stream)
    with _seq_lock:  # LocMemCache.incr is atomic, but add-then-incr on first use is not
        try:
            return cache.incr(key)
        except ValueError:
            cache.add(key, _seq_start(), timeout=None)
            return cache.incr(key)


def current_seq(stream: str) -> int:
    key = _seq_key(stream)
    value = cache.get(key)
    if value is None:
        cache.add(key, _seq_start(), timeout=None)  # so the next push follows on without a gap
        value = cache.get(key)
    return int(value) if value is not None else 0


def encode(kind: str, stream: str, seq: int, payload: dict[str, Any]) -> str:
    body = {"type": kind, "stream": stream, "seq": seq, "server_time": now_ms(), **payload}
    return json.dumps(body, separators=(",", ":"), default=str)


@stage("push")
def publish(kind: str, payload: dict[str, Any], *, stream: str = OPERATORS) -> int | None:
    """Send one message to every consumer in ``stream``; returns its sequence number, or None
    when it could not be sent (never raises: see the module docstring).

    Safe from any thread: from the server loop it schedules a task, from a worker thread it hands
    the send to the server loop without waiting, and with no server loop (management commands,
    tests) it sends synchronously.
    """
    try:
        seq = next_seq(stream)
    except health.UNAVAILABLE as exc:
        _lost(f"no sequence number for a {kind} push to {stream}: {health.describe(exc)}")
        return None
    message = {"type": PUSH_HANDLER, "text": encode(kind, stream, seq, payload)}
    if not _dispatch(_timed_send(get_channel_layer(), kind, stream, message)):
        return None
    return seq


@stage("push")
async def _timed_send(layer: Any, kind: str, stream: str, message: dict[str, Any]) -> None:
    """``group_send``, timed for the metrics: the fan-out to every socket of the stream (the
    in-memory layer writes to each local socket; Redis publishes once). A failed send is not
    timed: ``_lost`` reports it."""
    started = time.perf_counter()
    await layer.group_send(stream, message)
    metrics.push_sent(kind, time.perf_counter() - started)


def send_to_groups(groups: list[str], message: dict[str, Any]) -> None:
    """Send a control message (not a sequenced push) to each of ``groups``; as safe from any
    thread as ``publish``."""
    if groups:
        _dispatch(_send_each(get_channel_layer(), groups, message))


async def _send_each(layer: Any, groups: list[str], message: dict[str, Any]) -> None:
    for group in groups:
        await layer.group_send(group, message)


def _lost(reason: str) -> None:
    log.warning("push not sent: %s", reason)
    health.layer_watchdog.failed(f"a push could not be sent ({reason})")


def _dispatch(coro: Coroutine[Any, Any, None]) -> bool:
    """Hand the send over; False when it failed at once (a send left to run reports later)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None:
        task = running.create_task(coro)
        _pending.add(task)
        task.add_done_callback(_task_done)
        return True
    loop = _main_loop
    if loop is not None and loop.is_running() and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(coro, loop).add_done_callback(_future_done)
        return True
    try:
        async_to_sync(_await)(coro)
    except Exception as exc:
        _lost(health.describe(exc))
        return False
    return True


async def _await(coro: Coroutine[Any, Any, None]) -> None:
    await coro


_pending: set[asyncio.Task[None]] = set()


def _task_done(task: asyncio.Task[None]) -> None:
    _pending.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        _lost(health.describe(exc))


def _future_done(future: Future[None]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        _lost(health.describe(exc))
