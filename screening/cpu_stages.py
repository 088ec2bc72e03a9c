"""CPU seconds per stage of a call's handling, for the bench's "CPU per decided call"
(``manage.py bench --suite``, decide part) and for Prometheus alike.

``stage("claim")`` is a decorator (plain and ``async def`` functions) and a context manager. It
adds the CPU the current thread spent inside it (``time.thread_time()``, so time waiting for the
GIL, the network or a lock counts for nothing) to ``pbxscreen_stage_cpu_seconds_total{stage}``.

Stages nest without counting twice: each thread keeps a stack of open stages, and a stage counts
only its own time, its children's subtracted (a push sent on commit inside ``finish`` counts as
"push", not also as "finish"). An ``async def`` is measured step by step: only while its
coroutine (and what it awaits directly) runs on the loop's thread, never while other tasks run
between its steps; work it hands to another thread is that thread's own stage.

What is left out of every stage (the HTTP server, Django's handler and middleware, the event
loop's own work, the garbage collector between stages) is the bench's "unaccounted" line: the
process's CPU from ``/proc`` minus the stages' sum.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, ParamSpec, TypeVar

from prometheus_client import Counter

from screening.metrics import REGISTRY

P = ParamSpec("P")
T = TypeVar("T")

STAGE_CPU = Counter(
    "pbxscreen_stage_cpu_seconds",
    "CPU seconds this process spent in each stage of handling calls (request, claim, pbx, "
    "finish, push, intake, confirmations, events), nested stages counted once.",
    ["stage"],
    unit="",
    registry=REGISTRY,
)

_clock = time.thread_time
_local = threading.local()


def _stack() -> list[list[float]]:
    try:
        return _local.stack  # type: ignore[no-any-return]
    except AttributeError:
        _local.stack = []
        return _local.stack  # type: ignore[no-any-return]


class stage:
    __slots__ = ("_counter", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._counter = STAGE_CPU.labels(name)

    # The per-thread state lives on the thread's stack, so one instance serves every thread.
    def __enter__(self) -> None:
        _stack().append([_clock(), 0.0])  # [started, children's time]

    def __exit__(self, *_exc: object) -> None:
        stack = _stack()
        started, children = stack.pop()
        elapsed = _clock() - started
        self._counter.inc(max(0.0, elapsed - children))
        if stack:
            stack[-1][1] += elapsed

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        if inspect.iscoroutinefunction(fn):
            return self._wrap_async(fn)  # type: ignore[return-value]

        @functools.wraps(fn)
        def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            with self:
                return fn(*args, **kwargs)

        return timed

    def _wrap_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
            return await _Stepped(self, fn(*args, **kwargs))

        return timed


class _Stepped(Awaitable[T]):
    """Drives a coroutine, timing each of its steps as the stage (a step: from being resumed to
    its next suspension)."""

    __slots__ = ("_coro", "_stage")

    def __init__(self, stage_: stage, coro: Coroutine[Any, Any, T]) -> None:
        self._stage = stage_
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, T]:
        coro, timed = self._coro, self._stage
        send: Any = None
        error: BaseException | None = None
        while True:
            with timed:
                try:
                    yielded = coro.throw(error) if error is not None else coro.send(send)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            try:
                send, error = (yield yielded), None
            except BaseException as exc:  # cancellation, or the loop throwing in
                send, error = None, exc
