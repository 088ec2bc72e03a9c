"""Statistics against numbers computed by hand from the hand-built history (tests/reporting.py).

Runs the PostgreSQL percentile_cont path under DATABASE_URL=postgres://…, the Python fallback on
SQLite; both must give the same numbers."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils.html import escape

from screening.reports import stats
from tests.support.live import make_user
from tests.support.reporting import History

pytestmark = pytest.mark.django_db

TWO_DAYS = stats.Period(date(2026, 3, 2), date(2026, 3, 3), "day")


def counts(c: stats.Counts) -> tuple[int, ...]:
    return (c.offered, c.accepted, c.refused, c.expired, c.gone, c.failed, c.auto)


def test_counts_per_day_and_in_total(history: History) -> None:
    result = stats.compute(TWO_DAYS)
    assert [b.key for b in result.buckets] == [date(2026, 3, 2), date(2026, 3, 3)]
    #                                          offered acc ref exp gone fail auto
    assert counts(result.buckets[0].counts) == (7, 3, 1, 1, 1, 1, 1)
    assert counts(result.buckets[1].counts) == (3, 1, 1, 1, 0, 0, 1)
    assert counts(result.total) == (10, 4, 2, 2, 1, 1, 2)


def test_decision_time_median_and_90th_percentile(history: History) -> None:
    result = stats.compute(TWO_DAYS)
    # Operator decisions only: day 1 1000, 2000, 3000, 4000 ms; day 2 9400 ms.
    day1, day2 = (b.timing for b in result.buckets)
    assert (day1.decisions, day1.median_ms, day1.p90_ms) == (4, 2500, pytest.approx(3700))
    assert (day2.decisions, day2.median_ms, day2.p90_ms) == (1, 9400, 9400)
    total = result.timing
    assert (total.decisions, total.median_ms, total.p90_ms) == (5, 3000, pytest.approx(7240))
    assert result.window_ms == 10_000


def test_per_hour(history: History) -> None:
    result = stats.compute(stats.Period(date(2026, 3, 2), date(2026, 3, 3), "hour"))
    assert len(result.buckets) == 48
    by_key = {b.key: b for b in result.buckets}
    nine = by_key[datetime(2026, 3, 2, 9)]
    assert counts(nine.counts) == (3, 1, 1, 1, 0, 0, 0)
    assert (nine.timing.median_ms, nine.timing.p90_ms) == (1500, pytest.approx(1900))
    ten = by_key[datetime(2026, 3, 2, 10)]
    assert counts(ten.counts) == (4, 2, 0, 0, 1, 1, 1)
    assert sum(b.counts.offered for b in result.buckets) == 10


def test_expiry_rate_by_hour_of_day_and_by_trunk(history: History) -> None:
    result = stats.compute(TWO_DAYS)
    hours = {g.label: g.counts for g in result.by_hour_of_day}
    assert (hours["09:00"].offered, hours["09:00"].expired) == (6, 2)
    assert hours["09:00"].expiry_rate == pytest.approx(1 / 3)
    assert (hours["10:00"].offered, hours["10:00"].expired) == (4, 0)
    assert hours["11:00"].expiry_rate is None
    trunks = {g.label: g.counts for g in result.by_trunk}
    assert (trunks["Main line"].offered, trunks["Main line"].expired) == (6, 1)
    assert (trunks["Sales"].offered, trunks["Sales"].expired) == (4, 1)


def test_operators(history: History) -> None:
    ops = {o.label: o for o in stats.compute(TWO_DAYS).by_operator}
    assert set(ops) == {"Alice Able", "Bob Baker"}
    alice, bob = ops["Alice Able"], ops["Bob Baker"]
    assert (alice.decisions, alice.accepted, alice.refused, alice.failed) == (3, 1, 2, 0)
    assert (bob.decisions, bob.accepted, bob.refused, bob.failed) == (2, 1, 0, 1)
    assert (alice.timing.median_ms, alice.timing.p90_ms) == (2000, pytest.approx(7920))
    assert (bob.timing.median_ms, bob.timing.p90_ms) == (3500, pytest.approx(3900))
    assert (alice.close_calls, bob.close_calls) == (1, 0)  # 9.4 s of a 10 s window
    # Alice worked 09:00 on both days (6 calls, 2 expired); Bob 10:00 on day 1 (4 calls, none).
    assert (alice.active_hours, alice.offered_while_active, alice.expired_while_active) == (2, 6, 2)
    assert (bob.active_hours, bob.offered_while_active, bob.expired_while_active) == (1, 4, 0)


def test_operator_expiry_counts_only_the_trunks_they_may_screen(history: History) -> None:
    history.sales.operator_group = Group.objects.create(name="Sales team")
    history.sales.save()
    ops = {o.label: o for o in stats.compute(TWO_DAYS).by_operator}
    assert (ops["Alice Able"].offered_while_active, ops["Alice Able"].expired_while_active) == (
        4,
        1,
    )
    assert (ops["Bob Baker"].offered_while_active, ops["Bob Baker"].expired_while_active) == (2, 0)


def test_a_period_outside_the_data_is_empty_but_complete(history: History) -> None:
    result = stats.compute(stats.Period(date(2026, 4, 1), date(2026, 4, 30), "day"))
    assert len(result.buckets) == 30
    assert counts(result.total) == (0,) * 7
    assert result.timing.median_ms is None
    assert result.by_operator == []


def test_percentile_matches_percentile_cont() -> None:
    assert stats.percentile([], 0.5) is None
    assert stats.percentile([7.0], 0.9) == 7.0
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert stats.percentile([1.0, 2.0, 3.0, 4.0, 10.0], 0.9) == pytest.approx(7.6)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, (date(2026, 3, 4), date(2026, 3, 10), "day")),
        ({"by": "hour"}, (date(2026, 3, 4), date(2026, 3, 10), "hour")),
        ({"month": "2024-02"}, (date(2024, 2, 1), date(2024, 2, 29), "day")),
        ({"month": "2026-12", "by": "hour"}, (date(2026, 12, 1), date(2026, 12, 31), "hour")),
        (
            {"start": "2026-01-01", "end": "2026-01-31"},
            (date(2026, 1, 1), date(2026, 1, 31), "day"),
        ),
        (  # the wrong end is shown as an error and ignored
            {"start": "2026-02-01", "end": "2026-01-01"},
            (date(2026, 2, 1), date(2026, 3, 10), "day"),
        ),
        (
            {"start": "2020-01-01", "end": "2026-01-01"},
            (date(2026, 3, 4), date(2026, 3, 10), "day"),
        ),
        ({"month": "nonsense"}, (date(2026, 3, 4), date(2026, 3, 10), "day")),
        # Out of range: the month's end, the day after, a week before would not be dates.
        ({"month": "9999-12"}, (date(2026, 3, 4), date(2026, 3, 10), "day")),
        ({"month": "9999-12", "by": "hour"}, (date(2026, 3, 4), date(2026, 3, 10), "hour")),
        (
            {"start": "9999-12-31", "end": "9999-12-31"},
            (date(2026, 3, 4), date(2026, 3, 10), "day"),
        ),
        ({"end": "0001-01-01"}, (date(2026, 3, 4), date(2026, 3, 10), "day")),
        ({"month": "9998-12"}, (date(9998, 12, 1), date(9998, 12, 31), "day")),
        ({"month": "1900-01"}, (date(1900, 1, 1), date(1900, 1, 31), "day")),
    ],
)
def test_period_from_the_form(params: dict[str, str], expected: tuple[date, date, str]) -> None:
    period = stats.resolve_period(stats.StatsForm(params or None), today=date(2026, 3, 10))
    assert (period.first, period.last, period.by) == expected


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("month=9999-12", "month", "Pick a date from 1900-01 to 9998-12."),
        ("by=hour&month=9999-12", "month", "Pick a date from 1900-01 to 9998-12."),
        ("start=9999-12-31&end=9999-12-31", "start", "Pick a date from 1900-01-01 to 9998-12-31."),
        ("end=0001-01-01", "end", "Pick a date from 1900-01-01 to 9998-12-31."),
        ("start=2020-01-01", "start", "At most 400 days before today: give “To” too."),
    ],
)
def test_a_period_out_of_range_is_an_error_on_the_page(
    supervisor: Client, query: str, field: str, message: str
) -> None:
    response = supervisor.get(f"/stats/?{query}")
    assert response.status_code == 200
    html = response.content.decode()
    assert escape(message) in html
    assert f'id="id_{field}"' in html.split('class="field has-error"', 1)[1].split("</div>")[0]


def test_the_page_has_charts_and_tables(history: History, client: Client) -> None:
    client.force_login(make_user("sam", group="Supervisors"))
    for params in (
        {"start": "2026-03-02", "end": "2026-03-03"},
        {"month": "2026-03", "by": "hour"},
        {},
    ):
        response = client.get("/stats/", params)
        assert response.status_code == 200
        html = response.content.decode()
        assert html.count('<svg class="chart') == 5
        assert html.count('role="img"') == 5
        assert 'scope="col"' in html
        assert 'scope="row"' in html
        assert "cdn" not in html.lower()
        assert "<script" not in html.split("</main>")[0]  # charts need no JavaScript
    response = client.get("/stats/", {"start": "2026-03-02", "end": "2026-03-03"})
    html = response.content.decode()
    assert "Alice Able" in html
    assert ">10</span> offered" in html
