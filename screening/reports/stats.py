"""Statistics over a time range, aggregated in the database.

Closed hours come from the roll-up (screening.reports.rollup: per UTC hour, trunk and deciding
user, the same counts as below and the operator decision times rounded to the millisecond); only
the hours of the range not rolled up yet (the current one, mostly) are counted live from the call
table. A month of rolled-up hours is a few thousand small rows instead of a scan of every call and
a sort of every decision. Counts are exact either way. Percentiles over rolled-up hours are taken
from decision times rounded to the millisecond, so they are within 0.5 ms of the exact
``percentile_cont`` (each value is off by at most 0.5 ms, and an interpolation between two such
values is too); with no rolled-up hour in the range they are exact, as before.

Live, two queries: one grouped scan counts calls by (local hour, trunk, operator) with conditional
counts, and one ordered-set query (``percentile_cont`` with GROUPING SETS) gives decision-time
percentiles per bucket, per operator and overall on PostgreSQL. Everything else (per day, per hour
of day, per trunk, per operator) is rolled up in Python from the few thousand grouped rows; a
covering index on ``received_at`` (migration 0003) keeps both scans index-only.

SQLite has no percentile aggregate, so there the decision times are fetched and the same
interpolation (``percentile_cont``'s) is done in Python.

Unscreened calls (offered by the PBX while the event link was down, recorded afterwards from its
call records: screening.calls.reconcile) are no part of these counts, of the roll-up or of
"offered": nobody was asked, so they say nothing about screening. They are counted on their own,
live (``_unscreened``: few rows, found through the ``received_at`` index), per bucket and in
total, beside the outage windows of the period. Because the roll-up never counts them, recording
them into hours already rolled up changes no rolled-up figure and reopens no hour.

Decision time is received → claimed (the moment an operator pressed Accept or Refuse), for
operator decisions only: rules and trunk policies decide in microseconds and would hide how
people are doing.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import accumulate, chain
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import BigIntegerField, Count, DateTimeField, F, Q, QuerySet, TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Trunc
from django.utils import dateformat, timezone
from django.utils.translation import gettext_lazy as _

from screening.models import (
    Call,
    CallStatus,
    DecidedBy,
    LinkOutage,
    StatsHour,
    StatsRollup,
    Trunk,
)
from screening.reports.params import BoundedDateField

AUTO_KINDS = (DecidedBy.RULE, DecidedBy.TRUNK_POLICY, DecidedBy.FALLBACK)
OUTCOMES = ("accepted", "refused", "expired", "gone", "failed")
COUNT_KEYS = ("offered", *OUTCOMES, "auto")
MAX_DAYS = 400
DEFAULT_DAYS = 7
# A decision with less than this left before the deadline counts as a close call.
CLOSE_CALL = timedelta(seconds=2)
# Counted column: never NULL and in the covering index (COUNT(*) cannot take a FILTER in Django).
ROW = "received_at"


# --- Range ----------------------------------------------------------------------------------


class StatsForm(forms.Form):
    """The statistics page's query parameters (screening.reports.params)."""

    start = BoundedDateField(
        label=_("From"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    end = BoundedDateField(
        label=_("To (inclusive)"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    month = BoundedDateField(
        label=_("Month"),
        required=False,
        input_formats=["%Y-%m"],
        widget=forms.DateInput(attrs={"type": "month"}, format="%Y-%m"),
        help_text=_("Overrides From and To."),
    )
    by = forms.ChoiceField(
        label=_("Per"),
        choices=[("day", _("day")), ("hour", _("hour"))],
        required=False,
        initial="day",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            self.add_error("end", _("Must not be before “From”."))
        elif start and end and (end - start).days >= MAX_DAYS:
            self.add_error("end", _("At most %(days)s days at a time.") % {"days": MAX_DAYS})
        elif start and not end and "end" not in self.errors:
            # "To" defaults to today: say so rather than silently showing another period.
            today = timezone.localdate()
            if start > today:
                self.add_error("start", _("Must not be after today (or give “To” too)."))
            elif (today - start).days >= MAX_DAYS:
                self.add_error(
                    "start",
                    _("At most %(days)s days before today: give “To” too.") % {"days": MAX_DAYS},
                )
        return data


@dataclass(frozen=True)
class Period:
    first: date  # local dates, both included
    last: date
    by: str  # "day" or "hour"

    @property
    def start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.first, time.min))

    @property
    def end(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.last + timedelta(days=1), time.min))

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def resolve_period(form: StatsForm, today: date | None = None) -> Period:
    """The period the form asks for; invalid or missing parts fall back to the last 7 days."""
    today = today or timezone.localdate()
    data: dict[str, Any] = {}
    if form.is_bound:
        form.is_valid()
        data = {k: v for k, v in form.cleaned_data.items() if k not in form.errors}
    by = data.get("by") or "day"
    if data.get("month"):
        first = data["month"].replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        return Period(first, last, by)
    last = data.get("end") or today
    first = data.get("start") or last - timedelta(days=DEFAULT_DAYS - 1)
    if last < first or (last - first).days >= MAX_DAYS:
        first, last = today - timedelta(days=DEFAULT_DAYS - 1), today
    return Period(first, last, by)


# --- Database helpers -----------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: exactly what percentile_cont returns."""
    if not sorted_values:
        return None
    pos = fraction * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# What is counted per (hour, trunk, deciding user): the statistics' grouped scan and the columns of
# a roll-up row (screening.models.StatsRollup), in this order.
ROLLUP_FIELDS = (*COUNT_KEYS, "op_n", "op_accepted", "op_refused", "op_failed", "op_close")


def count_aggregates() -> dict[str, Any]:
    """Every count the page needs, in one grouped scan (keys: ``ROLLUP_FIELDS``)."""
    operator = Q(decided_by_kind=DecidedBy.OPERATOR, claimed_at__isnull=False)
    return {
        "offered": Count(ROW),
        **{s: Count(ROW, filter=Q(status=s)) for s in OUTCOMES},
        "auto": Count(ROW, filter=Q(decided_by_kind__in=AUTO_KINDS)),
        "op_n": Count(ROW, filter=operator),
        "op_accepted": Count(ROW, filter=operator & Q(status=CallStatus.ACCEPTED)),
        "op_refused": Count(ROW, filter=operator & Q(status=CallStatus.REFUSED)),
        "op_failed": Count(ROW, filter=operator & Q(status=CallStatus.FAILED)),
        "op_close": Count(ROW, filter=operator & Q(claimed_at__gt=F("deadline") - CLOSE_CALL)),
    }


def _hour(dt: datetime) -> datetime:
    """A local, naive hour: the key every roll-up uses."""
    if timezone.is_naive(dt):
        return dt.replace(minute=0, second=0, microsecond=0)
    return timezone.localtime(dt).replace(minute=0, second=0, microsecond=0, tzinfo=None)


def _local_hour(tz: Any) -> Any:
    """The local hour of ``received_at``. On PostgreSQL as a naive timestamp straight from the
    database: Django's Trunc would convert every grouped row back to an aware datetime, a
    noticeable share of a month's statistics."""
    if connection.vendor == "postgresql":
        name = timezone.get_current_timezone_name()
        return RawSQL(
            'date_trunc(\'hour\', "screening_call"."received_at" AT TIME ZONE %s)',
            (name,),
            output_field=DateTimeField(),
        )
    return Trunc("received_at", "hour", tzinfo=tz)


# --- Results --------------------------------------------------------------------------------


@dataclass
class Counts:
    offered: int = 0
    accepted: int = 0
    refused: int = 0
    expired: int = 0
    gone: int = 0
    failed: int = 0
    auto: int = 0

    def add(self, v: list[int]) -> None:
        """Add counts given in ``COUNT_KEYS`` order."""
        self.offered += v[0]
        self.accepted += v[1]
        self.refused += v[2]
        self.expired += v[3]
        self.gone += v[4]
        self.failed += v[5]
        self.auto += v[6]

    @property
    def expiry_rate(self) -> float | None:
        return self.expired / self.offered if self.offered else None


@dataclass
class Timing:
    decisions: int = 0
    median_ms: float | None = None
    p90_ms: float | None = None


@dataclass
class Bucket:
    key: Any  # date (per day) or naive local datetime (per hour)
    label: str
    counts: Counts = field(default_factory=Counts)
    timing: Timing = field(default_factory=Timing)
    unscreened: int = 0  # offered while the event link was down (not in ``counts``)


@dataclass
class Group:
    label: str
    counts: Counts = field(default_factory=Counts)


@dataclass
class OperatorStats:
    label: str
    decisions: int = 0
    accepted: int = 0
    refused: int = 0
    failed: int = 0
    close_calls: int = 0
    timing: Timing = field(default_factory=Timing)
    active_hours: int = 0
    # Calls on the operator's trunks in the hours they were working, and how many expired.
    offered_while_active: int = 0
    expired_while_active: int = 0

    @property
    def expiry_rate(self) -> float | None:
        if not self.offered_while_active:
            return None
        return self.expired_while_active / self.offered_while_active


@dataclass
class Stats:
    period: Period
    window_ms: float
    total: Counts
    timing: Timing
    buckets: list[Bucket]
    by_hour_of_day: list[Group]
    by_trunk: list[Group]
    by_operator: list[OperatorStats]
    unscreened: int = 0
    outages: list[LinkOutage] = field(default_factory=list)


@contextmanager
def _roomy_sorts() -> Iterator[None]:
    """PostgreSQL: a month of rows needs more than the default 4 MB work_mem to group and sort
    in memory (without it the planner picks an on-disk merge sort, 3x slower). SQLite: nothing,
    and no transaction (it would take the write lock)."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL work_mem = '32MB'")
        yield


def compute(period: Period) -> Stats:
    with _roomy_sorts():
        return _compute(period)


def screened(calls: QuerySet[Call]) -> QuerySet[Call]:
    """The calls the statistics and the roll-up count: all but the unscreened ones."""
    return calls.exclude(status=CallStatus.UNSCREENED)


def _compute(period: Period) -> Stats:
    calls = screened(Call.objects.filter(received_at__gte=period.start, received_at__lt=period.end))
    tz = timezone.get_current_timezone()
    buckets = _empty_buckets(period)
    total = Counts()
    hours = [Group(f"{h:02d}:00") for h in range(24)]
    trunks = {t.pk: t for t in Trunk.objects.all()}
    by_trunk: dict[int, Group] = {}
    # (local hour, trunk) -> counts in COUNT_KEYS order
    hour_trunk: dict[tuple[datetime, int], list[int]] = {}
    operators: dict[int, OperatorStats] = {}
    active: dict[int, set[datetime]] = defaultdict(set)

    rolled = _rolled_hours(period)
    live = _live_part(calls, period, rolled) if rolled else calls
    # Operator decision times of the rolled-up hours, per bucket, per operator and overall.
    samples: dict[str, dict[Any, list[float]]] = {
        "bucket": defaultdict(list),
        "operator": defaultdict(list),
        "all": defaultdict(list),
    }
    # (hour key, trunk, user, *ROLLUP_FIELDS[, decision times]); the hour key is a local hour
    # from the live query, a UTC hour (epoch seconds on PostgreSQL) from the roll-up.
    rows: list[Iterable[tuple[Any, ...]]] = []
    local_hours: dict[Any, datetime] = {}
    if live is not None:
        aggregates = count_aggregates()
        rows.append(
            live.order_by()
            .values("trunk_id", "decided_by_id", hour=_local_hour(tz))
            .annotate(**aggregates)
            .values_list("hour", "trunk_id", "decided_by_id", *aggregates)
        )
    if rolled:
        rows.append(_rolled_rows(period, rolled, local_hours, samples))
    # Fold the operator dimension away first: the roll-ups below then see a few thousand rows.
    # (Indexed rather than unpacked: a month of roll-up rows is thousands of them.)
    n = len(COUNT_KEYS)
    for row in chain.from_iterable(rows):
        raw_hour, trunk_id = row[0], row[1]
        hour = local_hours.get(raw_hour)
        if hour is None:
            hour = local_hours[raw_hour] = _hour(raw_hour)
        acc = hour_trunk.get((hour, trunk_id))
        if acc is None:
            hour_trunk[hour, trunk_id] = list(row[3 : 3 + n])
        else:
            for i in range(n):
                acc[i] += row[3 + i]
        if row[3 + n]:  # operator decisions
            user_id = row[2]
            op = operators.get(user_id)
            if op is None:
                op = operators[user_id] = OperatorStats("")
            op.decisions += row[3 + n]
            op.accepted += row[4 + n]
            op.refused += row[5 + n]
            op.failed += row[6 + n]
            op.close_calls += row[7 + n]
            active[user_id].add(hour)
    for (hour, trunk_id), values in hour_trunk.items():
        total.add(values)
        hours[hour.hour].counts.add(values)
        if trunk_id not in by_trunk:
            trunk = trunks.get(trunk_id)
            by_trunk[trunk_id] = Group(trunk.display_name if trunk else f"trunk {trunk_id}")
        by_trunk[trunk_id].counts.add(values)
        bucket = buckets.get(hour.date() if period.by == "day" else hour)
        if bucket is not None:
            bucket.counts.add(values)

    timings = _merged_timings(live, period, samples) if rolled else _timings(calls, period)
    for key, timing in timings["bucket"].items():
        if key in buckets:
            buckets[key].timing = timing
    _finish_operators(operators, active, trunks, hour_trunk, timings["operator"])
    unscreened = 0
    for hour, count in _unscreened(period, tz):
        unscreened += count
        bucket = buckets.get(hour.date() if period.by == "day" else hour)
        if bucket is not None:
            bucket.unscreened += count
    return Stats(
        period=period,
        window_ms=settings.SCREEN_WINDOW_SECONDS * 1000,
        total=total,
        timing=timings["all"].get(None, Timing()),
        buckets=list(buckets.values()),
        by_hour_of_day=hours,
        by_trunk=sorted(by_trunk.values(), key=lambda g: g.label.lower()),
        by_operator=sorted(operators.values(), key=lambda o: o.label.lower()),
        unscreened=unscreened,
        outages=outages(period),
    )


def _unscreened(period: Period, tz: Any) -> Iterator[tuple[datetime, int]]:
    """(local hour, unscreened calls) over the period."""
    rows = (
        Call.objects.filter(
            received_at__gte=period.start,
            received_at__lt=period.end,
            status=CallStatus.UNSCREENED,
        )
        .order_by()
        .values(hour=_local_hour(tz))
        .annotate(n=Count(ROW))
        .values_list("hour", "n")
    )
    for hour, count in rows:
        yield _hour(hour), count


MAX_OUTAGES = 100


def outages(period: Period) -> list[LinkOutage]:
    """The outage windows that overlap the period, newest first (at most ``MAX_OUTAGES``)."""
    overlapping = LinkOutage.objects.filter(started_at__lt=period.end).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gte=period.start)
    )
    return list(overlapping.order_by("-started_at")[:MAX_OUTAGES])


# --- Rolled-up hours ------------------------------------------------------------------------


def _rolled_hours(period: Period) -> dict[datetime, datetime]:
    """The complete rolled-up hours of the period: UTC hour -> local naive hour. Empty when there
    are none, or when local hours do not start on UTC hours (a time zone with a half-hour
    offset): then everything is counted live."""
    if period.start.astimezone(UTC).minute or period.end.astimezone(UTC).minute:
        return {}
    marked = StatsHour.objects.filter(
        complete=True, hour__gte=period.start, hour__lt=period.end
    ).values_list("hour", flat=True)
    rolled: dict[datetime, datetime] = {}
    for utc_hour in marked:
        if timezone.localtime(utc_hour).minute:
            return {}
        rolled[utc_hour] = _hour(utc_hour)
    return rolled


def _live_part(
    calls: QuerySet[Call], period: Period, rolled: dict[datetime, datetime]
) -> QuerySet[Call] | None:
    """The calls of the hours not rolled up (None: there are none)."""
    gaps: list[list[datetime]] = []
    hour, end = period.start.astimezone(UTC), period.end.astimezone(UTC)
    while hour < end:
        if hour not in rolled:
            if gaps and gaps[-1][1] == hour:
                gaps[-1][1] = hour + timedelta(hours=1)
            else:
                gaps.append([hour, hour + timedelta(hours=1)])
        hour += timedelta(hours=1)
    if not gaps:
        return None
    where = Q()
    for first, last in gaps:
        where |= Q(received_at__gte=first, received_at__lt=last)
    return calls.filter(where)


def _rolled_rows(
    period: Period,
    rolled: dict[datetime, datetime],
    local_hours: dict[Any, datetime],
    samples: dict[str, dict[Any, list[float]]],
) -> list[tuple[Any, ...]]:
    """The roll-up rows of the rolled-up hours (hour key, trunk, user, *ROLLUP_FIELDS, decision
    times as JSON); their hour keys go to ``local_hours`` and their decision times to
    ``samples`` on the way."""
    # A month is a few thousand rows: parsing their timestamps and JSON documents one at a time
    # is most of the cost, so PostgreSQL sends the hour as epoch seconds and every row's decision
    # times are parsed in one go.
    if connection.vendor == "postgresql":
        key: Any = RawSQL(
            'CAST(EXTRACT(EPOCH FROM "screening_statsrollup"."hour") AS bigint)',
            (),
            output_field=BigIntegerField(),
        )
        by_key: dict[Any, datetime] = {
            int(utc_hour.timestamp()): local for utc_hour, local in rolled.items()
        }
    else:
        key, by_key = F("hour"), dict(rolled)
    # Only the hours read as rolled up: one rolled up since is counted live.
    rows = [
        row
        for row in StatsRollup.objects.filter(hour__gte=period.start, hour__lt=period.end)
        .annotate(key=key, ms=Cast("decision_ms", TextField()))
        .values_list("key", "trunk_id", "decided_by_id", *ROLLUP_FIELDS, "ms")
        if row[0] in by_key
    ]
    local_hours.update(by_key)
    per_bucket, per_operator = samples["bucket"], samples["operator"]
    overall = samples["all"][None]
    by_day = period.by == "day"
    decision_ms = json.loads("[" + ",".join(row[-1] for row in rows) + "]")
    for row, times in zip(rows, decision_ms, strict=True):
        if times:
            hour = by_key[row[0]]
            per_bucket[hour.date() if by_day else hour].extend(times)
            per_operator[row[2]].extend(times)
            overall.extend(times)
    return rows


def _collect_decision_times(
    calls: QuerySet[Call], period: Period, samples: dict[str, dict[Any, list[float]]]
) -> None:
    """Add each operator decision's time (received → claimed, ms) to the per-bucket,
    per-operator and overall sample lists."""
    decided = calls.filter(decided_by_kind=DecidedBy.OPERATOR, claimed_at__isnull=False)
    rows = decided.order_by().values_list("received_at", "claimed_at", "decided_by_id")
    for received, claimed, user_id in rows.iterator(chunk_size=5000):
        value = (claimed - received) / timedelta(milliseconds=1)
        hour = _hour(received)
        samples["bucket"][hour.date() if period.by == "day" else hour].append(value)
        samples["operator"][user_id].append(value)
        samples["all"][None].append(value)


def _merged_timings(
    live: QuerySet[Call] | None, period: Period, samples: dict[str, dict[Any, list[float]]]
) -> dict[str, dict[Any, Timing]]:
    """Percentiles over the rolled-up decision times plus the live hours' exact ones."""
    if live is not None:
        _collect_decision_times(live, period, samples)
    return {
        name: {key: _counted_timing(values) for key, values in groups.items() if values}
        for name, groups in samples.items()
    }


def _counted_timing(values: list[float]) -> Timing:
    """``_timing``; for many values through a histogram: rolled-up decision times are whole
    milliseconds (a few thousand distinct values), so counting them beats sorting them."""
    if len(values) < 20_000:
        return _timing(values)
    counts = Counter(values)
    keys = sorted(counts)
    ranks = list(accumulate(map(counts.__getitem__, keys)))  # rank after each key
    n = ranks[-1]

    def at(rank: int) -> float:
        return float(keys[bisect_right(ranks, rank)])

    fractions = []
    for fraction in (0.5, 0.9):
        pos = fraction * (n - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        low = at(lo)
        fractions.append(low + (at(hi) - low) * (pos - lo))
    return Timing(n, *fractions)


def _empty_buckets(period: Period) -> dict[Any, Bucket]:
    buckets: dict[Any, Bucket] = {}
    if period.by == "day":
        for i in range(period.days):
            day = period.first + timedelta(days=i)
            buckets[day] = Bucket(day, dateformat.format(day, "D d M"))  # the page's language
        return buckets
    instant = period.start
    while instant < period.end:
        hour = _hour(instant)
        buckets.setdefault(hour, Bucket(hour, dateformat.format(hour, "d M H:00")))
        instant += timedelta(hours=1)
    return buckets


# Per bucket, per operator and overall in one pass: one scan, and PostgreSQL shares one sort
# between the two fractions of each group. ``date_part`` gives float8 (``EXTRACT`` gives numeric,
# several times slower to sort).
_PERCENTILES_SQL = """
SELECT GROUPING(bucket) = 0, GROUPING(decided_by_id) = 0, bucket, decided_by_id, COUNT(*),
       percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY ms)
FROM (
    SELECT date_trunc(%s, received_at AT TIME ZONE %s) AS bucket, decided_by_id,
           date_part('epoch', claimed_at - received_at) * 1000 AS ms
    FROM {table}
    WHERE received_at >= %s AND received_at < %s
      AND decided_by_kind = %s AND claimed_at IS NOT NULL
) AS decisions
GROUP BY GROUPING SETS ((bucket), (decided_by_id), ())
"""


def _timings(calls: QuerySet[Call], period: Period) -> dict[str, dict[Any, Timing]]:
    """Median and 90th percentile of operator decision times per bucket, per operator and
    overall (keys: a bucket key, a user id, None)."""
    out: dict[str, dict[Any, Timing]] = {"bucket": {}, "operator": {}, "all": {}}
    if connection.vendor == "postgresql":
        sql = _PERCENTILES_SQL.format(table=connection.ops.quote_name(Call._meta.db_table))
        params = [
            period.by,
            timezone.get_current_timezone_name(),
            period.start,
            period.end,
            DecidedBy.OPERATOR,
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        for by_bucket, by_user, bucket, user_id, n, fractions in rows:
            timing = Timing(n, *(fractions or (None, None)))  # NULL when there is no decision
            if by_bucket:
                out["bucket"][bucket.date() if period.by == "day" else bucket] = timing
            elif by_user:
                out["operator"][user_id] = timing
            else:
                out["all"][None] = timing
        return out
    samples: dict[str, dict[Any, list[float]]] = {
        "bucket": defaultdict(list),
        "operator": defaultdict(list),
        "all": defaultdict(list),
    }
    _collect_decision_times(calls, period, samples)
    for name, groups in samples.items():
        out[name] = {key: _timing(values) for key, values in groups.items()}
    return out


def _timing(values: list[float]) -> Timing:
    values.sort()
    return Timing(len(values), percentile(values, 0.5), percentile(values, 0.9))


def _finish_operators(
    operators: dict[int, OperatorStats],
    active: dict[int, set[datetime]],
    trunks: dict[int, Trunk],
    hour_trunk: dict[tuple[datetime, int], list[int]],
    timings: dict[Any, Timing],
) -> None:
    """Names, speeds, and the expiry rate of the calls on the trunks each operator may screen
    during the hours in which they decided at least one call. (An expired call has, by
    definition, no operator; this says how many got away while someone was working.)"""
    users = get_user_model().objects.filter(pk__in=operators).prefetch_related("groups")
    for user in users:
        op = operators[user.pk]
        op.label = user.get_full_name() or user.get_username()
        op.timing = timings.get(user.pk, Timing())
        op.active_hours = len(active[user.pk])
        groups = {g.pk for g in user.groups.all()}
        visible = {
            pk
            for pk, t in trunks.items()
            if t.operator_group_id is None or t.operator_group_id in groups or user.is_superuser
        }
        hours = active[user.pk]
        for (hour, trunk_id), values in hour_trunk.items():
            if hour in hours and trunk_id in visible:
                op.offered_while_active += values[0]
                op.expired_while_active += values[3]


# --- The shadow suggestion ------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How often people decided as the card's suggestion said (screening.calls.precedent), over
    the period's calls an operator decided that had a suggestion."""

    suggested: int  # operator-decided calls that carried a suggestion
    agreed: int
    refuse_suggested: int
    refuse_agreed: int
    accept_suggested: int
    accept_agreed: int

    @property
    def rate(self) -> float | None:
        return self.agreed / self.suggested if self.suggested else None


def suggestion_agreement(period: Period) -> Agreement:
    """One aggregate over the period's operator decisions (``received_at`` index)."""
    calls = (
        Call.objects.filter(
            received_at__gte=period.start,
            received_at__lt=period.end,
            decided_by_kind=DecidedBy.OPERATOR,
        )
        .exclude(decision="")
        .exclude(suggestion="")
    )
    agreed = Q(decision=F("suggestion"))
    refuse, accept = Q(suggestion="refuse"), Q(suggestion="accept")
    totals = calls.aggregate(
        suggested=Count(ROW),
        agreed=Count(ROW, filter=agreed),
        refuse_suggested=Count(ROW, filter=refuse),
        refuse_agreed=Count(ROW, filter=refuse & agreed),
        accept_suggested=Count(ROW, filter=accept),
        accept_agreed=Count(ROW, filter=accept & agreed),
    )
    return Agreement(**totals)
