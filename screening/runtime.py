"""Running blocking work (ORM, the PBX REST client) from async code, and the expiry timers."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

if TYPE_CHECKING:
    from screening.models import Call

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


_background: set[asyncio.Task[Any]] = set()


def spawn(coro: Any, name: str) -> asyncio.Task[Any]:
    """Start a task that is kept referenced until it ends and whose failure is logged."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _background.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


def schedule_expiry(call: Call) -> None:
    """Expire the call at its deadline, from this process (the sweeper covers a dead process)."""
    from screening import actions

    loop = asyncio.get_running_loop()
    delay = max(0.0, call.deadline.timestamp() - time.time())
    loop.call_later(delay, lambda: spawn(run_blocking(actions.expire, call), f"expire-{call.pk}"))


async def sweep_forever(interval: float = 1.0) -> None:
    """Catch calls whose timer or deciding process died. Cheap: one indexed query per tick."""
    from screening import actions, link
    from screening.reports import rollup

    while True:
        try:
            await run_blocking(actions.sweep)
            await run_blocking(link.announce_if_stale)
        except Exception:
            log.exception("sweep failed")
        if rollup.due():  # every few minutes: closed hours for the statistics
            try:
                await run_blocking(rollup.run_if_due)
            except Exception:
                log.exception("statistics roll-up failed")
        await asyncio.sleep(interval)


_sweepers: set[int] = set()


def ensure_sweeper() -> None:
    """Start one sweeper on the running loop (idempotent)."""
    loop = asyncio.get_running_loop()
    if id(loop) not in _sweepers:
        _sweepers.add(id(loop))
        spawn(sweep_forever(), "sweeper")
