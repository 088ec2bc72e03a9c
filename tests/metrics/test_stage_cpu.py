"""CPU per stage (screening.cpu_stages): each CPU second lands in exactly one stage, nested
stages and other tasks' work between an ``async def`` stage's steps included."""

from __future__ import annotations

import asyncio
import time

import pytest

from screening.cpu_stages import STAGE_CPU, stage
from screening.metrics import REGISTRY, exposition

TOLERANCE_S = 0.004  # thread_time's reads and the stage's own bookkeeping


def counted(name: str) -> float:
    return REGISTRY.get_sample_value("pbxscreen_stage_cpu_seconds_total", {"stage": name}) or 0.0


def spin(seconds: float) -> None:
    """Burn ``seconds`` of this thread's CPU."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_nested_stage_is_counted_once_and_not_in_its_parent() -> None:
    outer, inner = stage("test-outer"), stage("test-inner")
    before = counted("test-outer"), counted("test-inner")
    started = time.thread_time()
    with outer:
        spin(0.02)
        with inner:
            spin(0.03)
        spin(0.01)
    spent = time.thread_time() - started
    got_outer = counted("test-outer") - before[0]
    got_inner = counted("test-inner") - before[1]
    assert got_inner == pytest.approx(0.03, abs=TOLERANCE_S)
    assert got_outer == pytest.approx(0.03, abs=TOLERANCE_S)
    assert got_outer + got_inner == pytest.approx(spent, abs=TOLERANCE_S)


def test_a_decorated_function_counts_even_when_it_raises() -> None:
    @stage("test-raises")
    def failing() -> None:
        spin(0.01)
        raise ValueError("bad input")

    before = counted("test-raises")
    with pytest.raises(ValueError, match="bad input"):
        failing()
    assert counted("test-raises") - before == pytest.approx(0.01, abs=TOLERANCE_S)


def test_an_async_stage_counts_only_its_own_steps() -> None:
    """Another task spinning between the stage's steps is not the stage's CPU."""

    @stage("test-async")
    async def measured() -> str:
        spin(0.01)
        await asyncio.sleep(0)  # the other task runs here
        spin(0.01)
        await asyncio.sleep(0.001)
        spin(0.01)
        return "done"

    async def other() -> None:
        for _ in range(3):
            spin(0.02)
            await asyncio.sleep(0)

    async def both() -> str:
        result, _ = await asyncio.gather(measured(), other())
        return result

    before = counted("test-async")
    assert asyncio.run(both()) == "done"
    assert counted("test-async") - before == pytest.approx(0.03, abs=TOLERANCE_S)


def test_an_async_stage_passes_cancellation_through() -> None:
    @stage("test-cancel")
    async def waits() -> None:
        await asyncio.sleep(10)

    async def cancel_it() -> bool:
        task = asyncio.ensure_future(waits())
        await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        return False

    assert asyncio.run(cancel_it())


@pytest.mark.django_db
def test_the_stages_are_in_the_metrics() -> None:
    STAGE_CPU.labels("test-exposed").inc(0.5)
    text = exposition().decode()
    assert 'pbxscreen_stage_cpu_seconds_total{stage="test-exposed"} 0.5' in text
