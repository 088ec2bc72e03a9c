"""The statistics roll-up (screening.reports.rollup): statistics read from rolled-up hours plus the
live rest equal the direct computation from the call table (counts exactly, decision-time
percentiles within 0.5 ms: rolled-up decision times are whole milliseconds); the job is
idempotent; a call finishing after its hour ended never makes the numbers wrong.

Runs on SQLite and, under DATABASE_URL=postgres://…, on PostgreSQL (percentile_cont live path)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from screening.models import Call, CallStatus, DecidedBy, StatsHour, StatsRollup
from screening.reports import rollup, stats
from tests.support.reporting import T0, History, build_history, make_call

pytestmark = pytest.mark.django_db

THREE_DAYS = stats.Period(date(2026, 3, 2), date(2026, 3, 4), "day")
# Day 3 at 10:30: every hour up to 09:00 has closed (ended more than SETTLE ago), 10:00 is open.
NOW = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)
PERIODS = [
    THREE_DAYS,
    stats.Period(date(2026, 3, 2), date(2026, 3, 4), "hour"),
    stats.Period(date(2026, 3, 1), date(2026, 3, 7), "day"),
    stats.Period(date(2026, 3, 3), date(2026, 3, 3), "hour"),
]


@pytest.fixture
def history() -> History:
    """The hand-built two days of tests/reporting.py plus a third day: a decision time that is
    not a whole millisecond (08:15) and calls in the still open hour (10:xx)."""
    h = build_history()
    day3 = datetime(2026, 3, 4, tzinfo=UTC)
    h.calls += [
        make_call(h.sales, day3 + timedelta(hours=8, minutes=15), user=h.bob, decision_ms=2222.6),
        make_call(h.main, day3 + timedelta(hours=8, minutes=40), CallStatus.REFUSED,
                  user=h.alice, decision_ms=5100.25),
        make_call(h.main, day3 + timedelta(hours=9, minutes=59), CallStatus.EXPIRED),
        make_call(h.main, day3 + timedelta(hours=10, minutes=5), user=h.alice, decision_ms=700),
        make_call(h.sales, day3 + timedelta(hours=10, minutes=6), CallStatus.PENDING),
    ]  # fmt: skip
    return h


def snapshot(result: stats.Stats) -> Any:
    """Everything the page shows, as nested tuples."""

    def counts(c: stats.Counts) -> tuple[int, ...]:
        return (c.offered, c.accepted, c.refused, c.expired, c.gone, c.failed, c.auto)

    def timing(t: stats.Timing) -> tuple[Any, ...]:
        return (t.decisions, t.median_ms, t.p90_ms)

    return (
        counts(result.total),
        timing(result.timing),
        [(b.key, b.label, counts(b.counts), timing(b.timing)) for b in result.buckets],
        [(g.label, counts(g.counts)) for g in result.by_hour_of_day],
        [(g.label, counts(g.counts)) for g in result.by_trunk],
        [
            (
                *(o.label, o.decisions, o.accepted, o.refused, o.failed, o.close_calls),
                *(o.active_hours, o.offered_while_active, o.expired_while_active),
                timing(o.timing),
            )
            for o in result.by_operator
        ],
    )


def assert_same(rolled: Any, direct: Any, path: str = "") -> None:
    """Equal, except that floats (the percentiles) may differ by 0.5 ms."""
    if isinstance(direct, tuple | list):
        assert isinstance(rolled, tuple | list), path
        assert len(rolled) == len(direct), path
        for i, (a, b) in enumerate(zip(rolled, direct, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(direct, float):
        assert rolled == pytest.approx(direct, abs=0.5), path
    else:
        assert rolled == direct, path


def direct(period: stats.Period) -> Any:
    """The statistics straight from the call table, ignoring any roll-up."""
    saved = list(StatsHour.objects.values_list("pk", "complete"))
    StatsHour.objects.update(complete=False)
    try:
        return snapshot(stats.compute(period))
    finally:
        for pk, complete in saved:
            StatsHour.objects.filter(pk=pk).update(complete=complete)


def assert_matches_direct() -> None:
    for period in PERIODS:
        assert_same(snapshot(stats.compute(period)), direct(period), f"{period}")


def rows() -> list[tuple[Any, ...]]:
    return sorted(
        StatsRollup.objects.values_list(
            "hour", "trunk_id", "decided_by_id", *stats.ROLLUP_FIELDS, "decision_ms"
        ),
        key=repr,
    )


def marks() -> list[tuple[Any, ...]]:
    return list(StatsHour.objects.order_by("hour").values_list("hour", "complete", "calls"))


def test_rolled_up_hours_plus_the_open_one_equal_the_direct_computation(history: History) -> None:
    before = {period: snapshot(stats.compute(period)) for period in PERIODS}  # nothing rolled up
    result = rollup.rollup(NOW)
    # 2 Mar 09:00 up to 4 Mar 09:00: 49 closed hours, all settled; 10:00 is still open.
    assert (result.hours, result.complete) == (49, 49)
    assert StatsHour.objects.filter(complete=True).count() == 49
    assert not StatsRollup.objects.filter(hour__gte=datetime(2026, 3, 4, 10, tzinfo=UTC)).exists()
    assert sum(StatsRollup.objects.values_list("offered", flat=True)) == 13  # all but 10:xx
    for period in PERIODS:
        assert_same(snapshot(stats.compute(period)), before[period], f"{period}")

    # The hand-computed numbers of test_stats hold exactly (whole milliseconds there).
    two_days = stats.compute(stats.Period(date(2026, 3, 2), date(2026, 3, 3), "day"))
    day1, day2 = (b.timing for b in two_days.buckets)
    assert (day1.decisions, day1.median_ms, day1.p90_ms) == (4, 2500, pytest.approx(3700))
    assert (day2.decisions, day2.median_ms, day2.p90_ms) == (1, 9400, 9400)
    assert (two_days.total.offered, two_days.total.expired) == (10, 2)

    # The page really reads the roll-up for closed hours (and the live table for 10:xx).
    StatsRollup.objects.filter(hour__lt=datetime(2026, 3, 3, tzinfo=UTC)).update(
        offered=F("offered") + 100
    )
    assert (
        stats.compute(THREE_DAYS).total.offered
        == 15 + 100 * StatsRollup.objects.filter(hour__lt=datetime(2026, 3, 3, tzinfo=UTC)).count()
    )


def test_percentiles_of_rolled_up_hours_are_within_half_a_millisecond(history: History) -> None:
    day3 = stats.Period(date(2026, 3, 4), date(2026, 3, 4), "hour")
    exact = stats.compute(day3)
    rollup.rollup(NOW)
    rolled = stats.compute(day3)
    eight = next(b for b in rolled.buckets if b.key == datetime(2026, 3, 4, 8))
    # 2222.6 and 5100.25 ms are kept as 2223 and 5100 ms.
    assert (eight.timing.decisions, eight.timing.median_ms) == (2, (2223 + 5100) / 2)
    exact_eight = next(b for b in exact.buckets if b.key == datetime(2026, 3, 4, 8))
    assert exact_eight.timing.median_ms == pytest.approx((2222.6 + 5100.25) / 2)
    assert_same(snapshot(rolled), snapshot(exact))


def test_the_job_is_idempotent(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    rollup.rollup(NOW)
    first_rows, first_marks = rows(), marks()
    again = rollup.rollup(NOW)
    assert again.hours == 2  # only the latest complete hours are looked at again (REROLL)
    assert (rows(), marks()) == (first_rows, first_marks)
    monkeypatch.setattr(timezone, "now", lambda: NOW + timedelta(hours=1))
    out = StringIO()
    call_command("rollup_stats", "--since", "2026-03-02", stdout=out)  # recompute everything
    assert "hours rolled up" in out.getvalue()
    # (rolled_at changes; what the statistics read does not. The command starts at midnight,
    # before the first call, and its "now" is an hour later, so it also records 4 Mar 10:00,
    # which still holds the pending call: incomplete.)
    assert rows() == first_rows
    first, open_hour = T0, datetime(2026, 3, 4, 10, tzinfo=UTC)
    assert [m for m in marks() if first <= m[0] < open_hour] == first_marks
    assert all(m[1:] == (True, 0) for m in marks() if m[0] < first)
    assert StatsHour.objects.get(hour=datetime(2026, 3, 4, 10, tzinfo=UTC)).complete is False
    assert_matches_direct()


def test_a_call_finishing_late_keeps_its_hour_live_until_it_has_settled(history: History) -> None:
    # A call of 2 Mar 11:10 whose deciding process died: still pending hours later.
    late = make_call(history.sales, T0 + timedelta(hours=2, minutes=10), CallStatus.PENDING)
    eleven = T0 + timedelta(hours=2)
    rollup.rollup(T0 + timedelta(hours=5))
    assert StatsHour.objects.get(hour=eleven).complete is False
    assert not StatsRollup.objects.filter(hour=eleven).exists()
    assert StatsHour.objects.filter(complete=True).count() == 3  # 09, 10 and 12
    assert_matches_direct()

    # It finishes (an operator's decision reaches the PBX at last), after later hours were
    # rolled up: the numbers are right at once, its hour being counted live ...
    Call.objects.filter(pk=late.pk).update(
        status=CallStatus.ACCEPTED,
        decision="accept",
        decided_by_kind=DecidedBy.OPERATOR,
        decided_by=history.bob,
        claimed_at=late.received_at + timedelta(milliseconds=9100),
        finished_at=late.received_at + timedelta(hours=3),
    )
    assert_matches_direct()
    bucket = next(
        b
        for b in stats.compute(stats.Period(date(2026, 3, 2), date(2026, 3, 2), "hour")).buckets
        if b.key == datetime(2026, 3, 2, 11)
    )
    assert (bucket.counts.offered, bucket.counts.accepted, bucket.timing.median_ms) == (1, 1, 9100)

    # ... and the next run, though far past it, looks at the held hour again and closes it.
    result = rollup.rollup(T0 + timedelta(days=1, hours=5))
    assert StatsHour.objects.get(hour=eleven).complete is True
    assert StatsRollup.objects.get(hour=eleven).decision_ms == [9100]
    assert result.complete == result.hours
    assert_matches_direct()


def test_an_old_held_hour_is_looked_at_again(history: History) -> None:
    late = make_call(history.sales, T0 + timedelta(hours=2, minutes=10), CallStatus.PENDING)
    eleven = T0 + timedelta(hours=2)
    rollup.rollup(T0 + timedelta(days=1, hours=5))  # goes past the held hour
    assert StatsHour.objects.get(hour=eleven).complete is False
    Call.objects.filter(pk=late.pk).update(
        status=CallStatus.EXPIRED, decided_by_kind=DecidedBy.PBX_TIMEOUT
    )
    result = rollup.rollup(T0 + timedelta(days=1, hours=6))
    # Day 2 11:00 and 12:00 again (REROLL), 13:00 new, and the held 11:00 of day 1.
    assert result.hours == 4
    assert StatsHour.objects.get(hour=eleven).complete is True
    assert StatsRollup.objects.get(hour=eleven).expired == 1
    assert_matches_direct()


def test_recent_hours_are_recomputed_older_ones_on_request(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollup.rollup(NOW)
    # Calls written into the last complete hour (4 Mar 09:00) are caught by the next run ...
    make_call(history.main, datetime(2026, 3, 4, 9, 30, tzinfo=UTC), user=history.bob,
              decision_ms=1500)  # fmt: skip
    rollup.rollup(NOW)
    assert_matches_direct()
    # ... calls written into an old hour (an import) need a recompute from that day on.
    make_call(history.main, datetime(2026, 3, 2, 9, 30, tzinfo=UTC), CallStatus.GONE)
    rollup.rollup(NOW)
    assert stats.compute(THREE_DAYS).total.gone == 1  # still the rolled-up hour
    monkeypatch.setattr(timezone, "now", lambda: NOW)
    call_command("rollup_stats", "--since", "2026-03-02", stdout=StringIO())
    assert stats.compute(THREE_DAYS).total.gone == 2
    assert_matches_direct()


def test_a_half_hour_time_zone_counts_live(history: History) -> None:
    rollup.rollup(NOW)
    with timezone.override("Asia/Kolkata"):  # local hours start at :30 UTC
        period = stats.Period(date(2026, 3, 2), date(2026, 3, 4), "hour")
        assert stats._rolled_hours(period) == {}
        assert_same(snapshot(stats.compute(period)), direct(period))
    with timezone.override("Europe/London"):
        period = stats.Period(date(2026, 3, 2), date(2026, 3, 4), "hour")
        assert stats._rolled_hours(period)
        assert_same(snapshot(stats.compute(period)), direct(period))


def test_the_sweeper_turn_runs_every_few_minutes(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollup, "_next_turn", 0.0)
    first = rollup.run_if_due(NOW)
    assert first is not None
    assert first.hours == rollup.MAX_HOURS_PER_TURN
    assert first.more  # a backlog: the next tick goes on at once
    assert rollup.due()
    while (result := rollup.run_if_due(NOW)) is not None and result.more:
        pass
    assert not rollup.due()
    assert rollup.run_if_due(NOW) is None
    assert_matches_direct()


def test_seeding_history_rolls_it_up() -> None:
    from screening.devtools.seed import seed_history

    result = seed_history(300, days=2, seed=3)
    assert result.rolled_hours >= 47
    assert StatsHour.objects.filter(complete=True).count() >= 47
    today = timezone.localdate()
    for by in ("day", "hour"):
        period = stats.Period(today - timedelta(days=2), today, by)
        assert_same(snapshot(stats.compute(period)), direct(period))
