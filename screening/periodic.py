"""Background jobs the sweeper offers every tick, run by one server process per interval.

Every server process's sweeper (screening.startup) calls ``tick`` on each job. The schedule and the
lock are one cache key added with ``cache.add`` (atomic in Redis and in local memory) that lives
for the job's interval: the process that adds it runs the job, every other process (and this
one) finds the key there until it expires. After a failed run the key is shortened, so the next
try comes sooner than a whole interval later. A job runs as a task of its own and does its
blocking work in the runtime's pools (screening.runtime), so the sweep never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.cache import cache

from screening import runtime

log = logging.getLogger("screening.periodic")


class Failed(Exception):
    """Raised by a job that has logged why it failed itself: retried, with no traceback."""


class Periodic:
    """One job: ``run`` every ``every()`` seconds on one process, when ``enabled()``.

    ``run`` is a coroutine function; it raises to say the run failed (it logs the why itself, or
    the exception is logged here), and is then retried after ``retry_after`` seconds. A process
    asks the cache whether the job is due at most every ``claim_every`` seconds and never runs
    two of the same job at once.
    """

    def __init__(
        self,
        name: str,
        run: Callable[[], Awaitable[Any]],
        *,
        every: Callable[[], float],
        enabled: Callable[[], bool],
        retry_after: float,
        claim_every: float = 30.0,
    ) -> None:
        self.name = name
        self.key = f"pbxscreen:periodic:{name}"
        self._run_job = run
        self._every = every
        self._enabled = enabled
        self.retry_after = retry_after
        self._claim_every = claim_every
        self._next_claim = 0.0
        self._running: asyncio.Task[Any] | None = None

    def claim(self) -> bool:
        """Take this interval's run (True for exactly one caller across all processes)."""
        return bool(cache.add(self.key, uuid.uuid4().hex, max(1, round(self._every()))))

    def failed(self) -> None:
        """Have the next run come after ``retry_after`` rather than a whole interval."""
        cache.set(self.key, "failed", max(1, round(min(self.retry_after, self._every()))))

    def tick(self) -> None:
        """Called by the sweeper each tick: starts a background run when one is due."""
        if not self._enabled() or (self._running is not None and not self._running.done()):
            return
        now = time.monotonic()
        if now < self._next_claim:
            return
        self._next_claim = now + self._claim_every
        self._running = runtime.spawn(self._claimed_run(), self.name)

    async def wait(self) -> None:
        """Until the run this process started (if any) has ended (tests, shutdown)."""
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)

    async def _claimed_run(self) -> None:
        try:
            if not await runtime.run_blocking(self.claim):
                return
        except Exception as exc:  # the cache is down: the sweeper logs outages already
            log.debug("%s not claimed: %s", self.name, exc)
            return
        try:
            await self._run_job()
        except Exception as exc:
            if not isinstance(exc, Failed):
                log.exception("%s failed; tried again in %.0f s", self.name, self.retry_after)
            try:
                await runtime.run_blocking(self.failed)
            except Exception as exc:
                log.debug("%s retry not scheduled: %s", self.name, exc)
