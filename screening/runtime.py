"""Running blocking work from async code: the one convention for the whole product.

Database work goes through ``run_blocking`` (a small pool of its own, stale connections closed
first), a PBX request through ``run_pbx`` (a large pool that mostly waits on the network), an
external caller lookup through ``submit_lookup`` (a pool of its own), a connection opened ahead
for a decision through ``run_preopen`` (a small pool of its own), a task that must outlive its
caller through ``spawn``, and work that must finish even when whoever awaits it is cancelled
through ``to_the_end``. Consumers, views, the listener and intake all use these, never
``sync_to_async`` or ``database_sync_to_async`` directly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

log = logging.getLogger("screening.runtime")

T = TypeVar("T")

# Database work (intake, claims, timers) runs in a small pool of its own rather than Django's one
# thread for sync code. Small on purpose: its threads run Python, and every extra runnable thread
# makes the one holding SQLite's write lock (or a row lock) wait longer for the GIL, each switch
# costing up to sys.getswitchinterval(); 20 simultaneous decisions in 32 threads convoyed so.
DB_WORKERS = 4
_workers = ThreadPoolExecutor(max_workers=DB_WORKERS, thread_name_prefix="pbxscreen-db")
# Requests to the PBX wait on the network for up to the whole window: a pool of their own, large,
# so one slow PBX answer never queues the other operators, and no database thread waits on it.
PBX_WORKERS = 32
_pbx_workers = ThreadPoolExecutor(max_workers=PBX_WORKERS, thread_name_prefix="pbxscreen-pbx")
# External caller lookups (screening.calls.lookups) wait on servers we do not run: a pool of their
# own, so a lookup server that hangs can fill only this pool, never delay a request to the PBX.
LOOKUP_WORKERS = 16
_lookup_workers = ThreadPoolExecutor(
    max_workers=LOOKUP_WORKERS, thread_name_prefix="pbxscreen-lookup"
)


def _fresh_connections(fn: Callable[..., T]) -> Callable[..., T]:
    def run(*args: Any, **kwargs: Any) -> T:
        close_old_connections()  # drop a connection the database closed (restart, idle timeout)
        return fn(*args, **kwargs)

    return run


async def run_blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` (database work) in the database pool and await its result."""
    wrapped = sync_to_async(_fresh_connections(fn), thread_sensitive=False, executor=_workers)
    return await wrapped(*args, **kwargs)


async def run_pbx(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` (a PBX request, no database work) in the PBX pool and await its result."""
    return await asyncio.get_running_loop().run_in_executor(
        _pbx_workers, functools.partial(fn, *args, **kwargs)
    )


# Connections opened ahead for decisions (screening.pbx.preopen) wait on a handshake for up to a
# few seconds when the PBX is slow or unreachable: a small pool of their own, so however many calls
# arrive at once they never take a thread a decision needs; a call whose turn comes too late just
# has none, and its decision opens its own connection.
PREOPEN_WORKERS = 8
_preopen_workers = ThreadPoolExecutor(
    max_workers=PREOPEN_WORKERS, thread_name_prefix="pbxscreen-preopen"
)


async def run_preopen(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` (opening a connection ahead, no database work) in its pool."""
    return await asyncio.get_running_loop().run_in_executor(_preopen_workers, fn, *args)


def submit_lookup(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Start ``fn`` (an external lookup, no database work) in the lookup pool; the caller
    decides how long to wait for the future, and the thread ends by its own timeouts."""
    return asyncio.get_running_loop().run_in_executor(_lookup_workers, fn, *args)


_background: set[asyncio.Task[Any]] = set()


def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
    """Start a task that is kept referenced until it ends and whose failure is logged."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _background.add(task)
    task.add_done_callback(_finished)
    return task


async def to_the_end(coro: Coroutine[Any, Any, T], name: str) -> T:
    """Await ``coro`` in a task of its own that runs to its end even if the caller is cancelled
    (a browser or API client going away mid-request cancels the view)."""
    return await asyncio.shield(spawn(coro, name))


def _finished(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())
