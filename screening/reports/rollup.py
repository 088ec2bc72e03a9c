"""Roll-up of closed hours for the statistics page (screening.reports.stats).

Why: a month of statistics straight from the call table is a grouped scan of ~170,000 rows plus a
sort of every operator decision for the percentiles: 230-320 ms on a million calls, over the
200 ms target. Per UTC hour, trunk and deciding user, ``StatsRollup`` keeps exactly the counts the
statistics take and the operator decision times rounded to the millisecond; a month then reads a
few thousand small rows, and only the hours not rolled up yet (the current one, mostly) are counted
live from the call table. (A stored decision-time column with better indexes was the alternative;
it would still leave the month's scan and the sorts, which are most of the time.)

What it reads from a call: ``received_at`` (its hour), ``trunk``, ``decided_by``,
``decided_by_kind``, ``status``, ``claimed_at`` and ``deadline``, the fields the statistics count.
Outcome confirmation (``pbx_outcome``, ``outcome_mismatch``) is not part of the statistics.

When an hour is final: it is rolled up once it ended ``SETTLE`` ago, and recorded *complete* only if
none of its calls is still open (pending or deciding). Those fields change only while a call is
open (claim, finish, expire, give up and hang-up all update from an open status only), and a call
is stamped with the moment it reaches us, so a complete hour does not change any more. The one
exception: a call recorded *gone* from a PBX report that a later, out-of-order report shows was
routed becomes *expired* (screening.calls.endings.end_by_pbx_report); that reopens its hour
(``reopen_hour``), which is then counted live and rolled up again like any incomplete hour.
An hour that still holds an open call (its process died and nobody has swept it yet) is recorded
incomplete, counted live by the statistics, and looked at again on every run until it has
settled: a call finishing late delays that hour's roll-up, it cannot make it wrong. As a safety
net every run also recomputes the last ``REROLL`` of complete hours. Whoever writes calls into the
past (the history generator, an import) recomputes from there: ``rollup(since=...)``,
``manage.py rollup_stats --since``; ``seed_history`` does so itself. Unscreened calls, recorded
into past hours after a link outage (screening.calls.reconcile), are left out of the roll-up as
they are of the statistics' counts (``stats.screened``), so recording them changes no roll-up.

Idempotent: a run recomputes whole hours from the call table and replaces their rows in one
transaction per day of hours. On PostgreSQL a transaction-scoped advisory lock lets one process at
a time do it; the sweeper, which runs in every process, skips a turn when another holds it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q
from django.db.models.functions import Trunc
from django.utils import timezone

from screening.models import OPEN_STATUSES, Call, DecidedBy, StatsHour, StatsRollup
from screening.reports.stats import ROLLUP_FIELDS, ROW, count_aggregates, screened

log = logging.getLogger("screening.rollup")

HOUR = timedelta(hours=1)
# An hour is looked at once it ended this long ago: more than the PBX window (at most 60 s) plus
# the sweeper's 30 s grace for a stuck decision, so normally every call of it has finished.
SETTLE = timedelta(minutes=5)
# Every run recomputes this much of the latest complete hours again (a safety net).
REROLL = timedelta(hours=2)
# One transaction per this many hours.
CHUNK = timedelta(days=1)
# The sweeper runs the job this often per process, a day of hours at a time while catching up.
INTERVAL_SECONDS = 300.0
MAX_HOURS_PER_TURN = 24
LOCK_KEY = 0x70627873  # pg advisory lock id ("pbxs")
MS = timedelta(milliseconds=1)


@dataclass
class RollupResult:
    hours: int = 0  # hours looked at (recomputed)
    complete: int = 0  # of which complete (final)
    rows: int = 0  # StatsRollup rows written
    skipped: bool = False  # another process held the lock
    more: bool = False  # stopped at max_hours with closed hours still to do


def floor_hour(dt: datetime) -> datetime:
    """The start of ``dt``'s hour, in UTC."""
    return dt.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def rollup(
    now: datetime | None = None,
    *,
    since: datetime | None = None,
    max_hours: int | None = None,
    wait: bool = True,
) -> RollupResult:
    """Roll up every closed hour not yet final (or, with ``since``, every closed hour from then
    on). ``wait=False``: give up at once when another process is rolling up."""
    now = now or timezone.now()
    cutoff = floor_hour(now - SETTLE)  # hours before this one have ended SETTLE ago
    ranges = [(floor_hour(since), cutoff)] if since is not None else _ranges_to_do(cutoff)
    result = RollupResult()
    for first, stop in ranges:
        start = first
        while start < stop:
            end = min(start + CHUNK, stop)
            if max_hours is not None:
                end = min(end, start + (max_hours - result.hours) * HOUR)
                if end <= start:
                    result.more = True
                    return result
            with transaction.atomic():
                if not _lock(wait):
                    result.skipped = True
                    return result
                hours, complete, rows = _roll(start, end, now)
            result.hours += hours
            result.complete += complete
            result.rows += rows
            start = end
    return result


_next_turn = 0.0


def due() -> bool:
    return time.monotonic() >= _next_turn


def run_if_due(now: datetime | None = None) -> RollupResult | None:
    """The sweeper's turn: roll up at most a day of hours every ``INTERVAL_SECONDS`` (at once
    again while catching up on a backlog); never waits for another process."""
    global _next_turn
    if not due():
        return None
    _next_turn = time.monotonic() + INTERVAL_SECONDS  # also after a failure
    result = rollup(now, max_hours=MAX_HOURS_PER_TURN, wait=False)
    if result.more:
        _next_turn = 0.0
    if result.hours:
        log.info("statistics roll-up: %d hours, %d complete", result.hours, result.complete)
    return result


def _ranges_to_do(cutoff: datetime) -> list[tuple[datetime, datetime]]:
    """The latest complete hours again (``REROLL``) and everything newer (from the first call
    when nothing is rolled up yet), then, one by one, older hours that still held an open call
    when last looked at."""
    last = StatsHour.objects.filter(complete=True).aggregate(last=Max("hour"))["last"]
    start: datetime | None
    if last is not None:
        start = last - REROLL + HOUR
    else:
        first = Call.objects.aggregate(first=Min("received_at"))["first"]
        start = floor_hour(first) if first is not None else None
    ranges = [(start, cutoff)] if start is not None else []
    held = StatsHour.objects.filter(complete=False, hour__lt=start or cutoff).order_by("hour")
    ranges += [(hour, hour + HOUR) for hour in held.values_list("hour", flat=True)]
    return ranges


def _lock(wait: bool) -> bool:
    if connection.vendor != "postgresql":
        return True  # SQLite serialises writers itself
    with connection.cursor() as cursor:
        if wait:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            return True
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _roll(start: datetime, end: datetime, now: datetime) -> tuple[int, int, int]:
    """Recompute the hours in [start, end) and replace their rows: (hours, complete, rows)."""
    calls = screened(Call.objects.filter(received_at__gte=start, received_at__lt=end)).order_by()
    aggregates = count_aggregates()
    grouped = (
        calls.values("trunk_id", "decided_by_id", utc_hour=Trunc("received_at", "hour", tzinfo=UTC))
        .annotate(**aggregates, still_open=Count(ROW, filter=Q(status__in=OPEN_STATUSES)))
        .values_list("utc_hour", "trunk_id", "decided_by_id", *aggregates, "still_open")
    )
    per_hour: dict[datetime, list[int]] = defaultdict(lambda: [0, 0])  # calls, still open
    counted: dict[tuple[datetime, int, int | None], list[int]] = {}
    for utc_hour, trunk_id, user_id, *values in grouped:
        hour = floor_hour(utc_hour)
        per_hour[hour][0] += values[0]
        per_hour[hour][1] += values[-1]
        counted[hour, trunk_id, user_id] = values[:-1]
    decision_ms: dict[tuple[datetime, int, int | None], list[int]] = defaultdict(list)
    decisions = calls.filter(
        decided_by_kind=DecidedBy.OPERATOR, claimed_at__isnull=False
    ).values_list("received_at", "claimed_at", "trunk_id", "decided_by_id")
    for received, claimed, trunk_id, user_id in decisions.iterator(chunk_size=5000):
        key = (floor_hour(received), trunk_id, user_id)
        decision_ms[key].append(round((claimed - received) / MS))

    hours: list[StatsHour] = []
    hour = start
    while hour < end:
        n, still_open = per_hour.get(hour, (0, 0))
        hours.append(StatsHour(hour=hour, complete=not still_open, calls=n, rolled_at=now))
        hour += HOUR
    complete = {h.hour for h in hours if h.complete}
    rows = [
        StatsRollup(
            hour=key[0],
            trunk_id=key[1],
            decided_by_id=key[2],
            decision_ms=sorted(decision_ms.get(key, ())),
            **dict(zip(ROLLUP_FIELDS, values, strict=True)),
        )
        for key, values in counted.items()
        if key[0] in complete
    ]
    StatsRollup.objects.filter(hour__gte=start, hour__lt=end).delete()
    StatsHour.objects.filter(hour__gte=start, hour__lt=end).delete()
    StatsHour.objects.bulk_create(hours, batch_size=1000)
    StatsRollup.objects.bulk_create(rows, batch_size=1000)
    return len(hours), len(complete), len(rows)


def reopen_hour(received_at: datetime) -> None:
    """A finished call of this moment's hour changed what the statistics count: mark the hour
    incomplete, so the statistics count it live and the next run rolls it up again."""
    StatsHour.objects.filter(hour=floor_hour(received_at)).update(complete=False)


def describe(result: RollupResult) -> str:
    text = f"{result.hours:,} hours rolled up ({result.complete:,} complete), {result.rows:,} rows"
    if result.skipped:
        text += "; stopped: another process is rolling up"
    if result.more:
        text += "; more to do"
    return text
