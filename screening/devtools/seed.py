"""Realistic call history for the demo and the reporting benchmark.

Months of calls with business-hour peaks, quiet weekends and nights, repeat callers, operators
who decide at human speed (slower when it is busy), expiries that grow with load, rules, trunk
policy and fallback decisions, PBX failures, callers hanging up, PBX-confirmed outcomes with a
few mismatches, and the audit rows each of those leaves.

Rows are generated a batch at a time and written with PostgreSQL's COPY (psycopg's
``cursor.copy()``) or, on SQLite, ``bulk_create``: never one ``save()`` per row.
"""

from __future__ import annotations

import json
import math
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import connection, transaction
from django.db.models import F, Model
from django.db.models.functions import Mod
from django.utils import timezone

from screening.calls import precedent
from screening.calls.numbers import normalise_for_trunk
from screening.calls.roles import setup_roles
from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallerNote,
    CallStatus,
    DecidedBy,
    Decision,
    PbxOutcome,
    RefusalReason,
    Rule,
    RuleMatch,
    Trunk,
)
from screening.reports.rollup import rollup

BATCH = 5000
AREAS = ("20 7946", "161 496", "113 496", "7700 900")
# Relative call volume by local hour of day: quiet nights, morning and afternoon peaks.
HOUR_PROFILE = (
    0.04, 0.03, 0.02, 0.02, 0.02, 0.04, 0.10, 0.30, 0.80, 1.30, 1.50, 1.40,
    1.00, 1.10, 1.40, 1.30, 1.10, 0.80, 0.40, 0.25, 0.18, 0.12, 0.08, 0.06,
)  # fmt: skip
WEEKDAY_PROFILE = (1.0, 1.0, 1.0, 1.0, 0.95, 0.35, 0.2)
DEFAULT_TRUNKS = (
    ("peer-to-41", "Main line"),
    ("register-bt", "Sales (BT)"),
    ("sip-gamma", "Support (Gamma)"),
)
DEFAULT_OPERATORS = (
    ("olivia", "Olivia", "Grant"),
    ("noah", "Noah", "Patel"),
    ("mia", "Mia", "Kowalski"),
)
RULE_NUMBERS = (
    ("+44 20 7946 0999", RuleMatch.EXACT, Decision.REFUSE, "known nuisance caller"),
    ("+44 1632 96", RuleMatch.PREFIX, Decision.REFUSE, "telemarketing block"),
    ("+44 20 7946 0100", RuleMatch.EXACT, Decision.ACCEPT, "head office, always put through"),
)
FAILURES = (
    (None, "Read timed out (no answer from the PBX in time)"),
    (60002, "MAX LIMITATION EXCEEDED"),
    (40002, "PARAMETER ERROR"),
)
CDR_STATUS = {
    PbxOutcome.ANSWERED: "ANSWERED",
    PbxOutcome.NO_ANSWER: "NO ANSWER",
    PbxOutcome.DROPPED: "FAILED",
    PbxOutcome.CALLER_HUNG_UP: "NO ANSWER",
    PbxOutcome.ROUTED: "ANSWERED",
}


@dataclass
class SeedResult:
    calls: int
    audit_rows: int
    seconds: float
    rolled_hours: int = 0  # statistics roll-up (screening.reports.rollup), included in seconds


@dataclass
class _Context:
    rng: random.Random
    token: str
    trunks: list[Trunk]
    dids: dict[int, list[str]]
    trunk_weights: list[float]
    operators: list[AbstractBaseUser]
    operator_weights: list[float]
    rules: list[Rule]
    window: timedelta
    margin: float
    regulars: list[str]
    regular_weights: list[float]
    recent: dict[str, deque[datetime]]
    max_weight: float


def seed_history(
    calls: int,
    *,
    days: int = 90,
    seed: int | None = None,
    end: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> SeedResult:
    """Add ``calls`` calls spread over the ``days`` before ``end`` (default now)."""
    started = time.monotonic()
    rng = random.Random(seed)  # noqa: S311 - demo data, not security
    end = end or timezone.now() - timedelta(minutes=5)
    start = end - timedelta(days=days)
    ctx = _context(rng)
    seed_contacts(ctx.regulars)
    slots = _slots(rng, start, end)
    counts = _apportion(calls, [w for _, _, w in slots])
    ctx.max_weight = max((w for _, _, w in slots), default=1.0)
    writer = _CopyWriter() if connection.vendor == "postgresql" else _SqliteWriter()
    written = audit_rows = 0
    batch: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    with transaction.atomic():
        for (slot_start, hour, weight), n in zip(slots, counts, strict=True):
            offsets = sorted(rng.random() * 3600 for _ in range(n))
            for offset in offsets:
                batch.append(
                    _one_call(ctx, slot_start + timedelta(seconds=offset), hour, weight, written)
                )
                written += 1
                if len(batch) >= BATCH:
                    audit_rows += writer.write(batch)
                    batch = []
                    if progress:
                        progress(written)
        if batch:
            audit_rows += writer.write(batch)
        _record_rule_hits(ctx.rules)
        _seed_caller_memory(ctx, start, end)
    # The history lands in hours the statistics roll-up may already have finished: redo them all.
    rolled = rollup(since=start).hours if written else 0
    return SeedResult(written, audit_rows, time.monotonic() - started, rolled)


# --- Setup ----------------------------------------------------------------------------------


def _context(rng: random.Random) -> _Context:
    setup_roles()
    trunks = list(Trunk.objects.order_by("pk"))
    if not trunks:
        trunks = [Trunk.objects.create(name=n, label=label) for n, label in DEFAULT_TRUNKS]
    operators = list(_operators())
    rules = list(Rule.objects.filter(note__in=[r[3] for r in RULE_NUMBERS]).order_by("pk"))
    if not rules:
        # Expired already: they decided calls in the past without touching today's live calls.
        expired = timezone.now() - timedelta(days=1)
        for pattern, match, action, note in RULE_NUMBERS:
            rule = Rule(pattern=pattern, match=match, action=action, note=note, expires_at=expired)
            rule.save()
            rules.append(rule)
    dids = {t.pk: [f"+44 20 7946 {1000 + 10 * t.pk + i:04d}" for i in range(3)] for t in trunks}
    regulars = [f"+44 {rng.choice(AREAS)} {rng.randrange(10000):04d}" for _ in range(2000)]
    return _Context(
        rng=rng,
        token=secrets.token_hex(4),
        trunks=trunks,
        dids=dids,
        # The first trunk (the main line) carries the most calls.
        trunk_weights=list(accumulate(3.0 if i == 0 else 1.0 for i in range(len(trunks)))),
        operators=operators,
        # Some people work more shifts than others.
        operator_weights=[1.0 / (i + 1) ** 0.6 for i in range(len(operators))],
        rules=rules,
        window=timedelta(seconds=settings.SCREEN_WINDOW_SECONDS),
        margin=settings.SCREEN_SAFETY_MARGIN_SECONDS,
        regulars=regulars,
        regular_weights=[1.0 / (i + 1) for i in range(len(regulars))],  # Zipf: a few call a lot
        recent={},
        max_weight=1.0,
    )


DEMO_CONTACTS = (
    ("Harriet Lowe", "Lowe & Daughters Removals"),
    ("Dev Malhotra", "Northgate Pharmacy"),
    ("Sofia Brandt", ""),
    ("Callum Finch", "Finch Electrical"),
    ("Nadia Haddad", "St Anne's Surgery"),
    ("Peter Quayle", "Quayle Accountancy"),
    ("Mei Lin", ""),
    ("Rory Gallagher", "Gallagher Couriers"),
)


def seed_contacts(regulars: list[str]) -> None:
    """Names for the history's most frequent callers (``regulars`` is Zipf-weighted, most
    frequent first), so the demo's audit, precedent and review show who called. Written through
    the contacts' own writer under fixed keys: seeding again changes nothing."""
    from screening.contacts.store import Entry, apply
    from screening.models import ContactSource

    pairs = zip(DEMO_CONTACTS, regulars, strict=False)
    entries = [
        Entry(f"demo:{i}", name, organisation, ((number, "business" if organisation else ""),))
        for i, ((name, organisation), number) in enumerate(pairs)
    ]
    apply(ContactSource.MANUAL, entries, remove_missing=False)


def _operators() -> list[AbstractBaseUser]:
    group = Group.objects.get(name="Operators")
    users = list(group.user_set.order_by("pk"))
    if users:
        return users
    User = get_user_model()
    for username, first, last in DEFAULT_OPERATORS:
        user, created = User.objects.get_or_create(
            username=username, defaults={"first_name": first, "last_name": last}
        )
        if created:
            user.set_unusable_password()
            user.save()
        user.groups.add(group)
        users.append(user)
    return users


def _slots(rng: random.Random, start: datetime, end: datetime) -> list[tuple[datetime, int, float]]:
    """Every hour in the range with its relative volume (a little noise per hour)."""
    slots = []
    instant = start.replace(minute=0, second=0, microsecond=0)
    while instant < end:
        local = timezone.localtime(instant)
        weight = HOUR_PROFILE[local.hour] * WEEKDAY_PROFILE[local.weekday()]
        slots.append((instant, local.hour, weight * rng.lognormvariate(0, 0.15)))
        instant += timedelta(hours=1)
    return slots


def _apportion(total: int, weights: list[float]) -> list[int]:
    """Exactly ``total`` calls shared out in proportion to ``weights`` (largest remainders)."""
    weight_sum = sum(weights) or 1.0
    exact = [total * w / weight_sum for w in weights]
    counts = [math.floor(x) for x in exact]
    short = total - sum(counts)
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[:short]:
        counts[i] += 1
    return counts


def _record_rule_hits(rules: list[Rule]) -> None:
    for rule in rules:
        calls = Call.objects.filter(rule=rule)
        last = calls.order_by("-received_at").values_list("received_at", flat=True).first()
        Rule.objects.filter(pk=rule.pk).update(hit_count=calls.count(), last_hit_at=last)


# Refusal reasons by call id modulo 20 (a fifth of refusals carry none), and the team's notes
# on a few of the busiest regular callers.
_REASON_SLOTS = (
    (range(0, 10), RefusalReason.SPAM),
    (range(10, 13), RefusalReason.WRONG_NUMBER),
    (range(13, 14), RefusalReason.ABUSIVE),
    (range(14, 16), RefusalReason.OTHER),
)
_NOTES = (
    ("Accounts team at our main supplier: put through.", None),
    ("Asked us not to call back before 10:00.", None),
    ("Courier booked for today: accept.", timedelta(days=1)),
    ("Keeps asking for the old sales line; it moved to the Sales trunk.", None),
)


def _seed_caller_memory(ctx: _Context, start: datetime, end: datetime) -> None:
    """Reasons on the seeded refusals, a few notes, then every number's precedent from the
    history (screening.calls.precedent.rebuild), so the demo's cards show what the team did."""
    refused = Call.objects.filter(
        received_at__gte=start,
        received_at__lte=end,
        status=CallStatus.REFUSED,
        decided_by_kind=DecidedBy.OPERATOR,
        reason="",
    ).annotate(slot=Mod("pk", 20))
    for slots, reason in _REASON_SLOTS:
        refused.filter(slot__in=list(slots)).update(reason=reason, reason_at=F("finished_at"))
    now = timezone.now()
    for number, (text, lasts) in zip(ctx.regulars[:4], _NOTES, strict=False):
        CallerNote.objects.get_or_create(
            number=normalise_for_trunk(number, ctx.trunks[0]),
            text=text,
            defaults={
                "author": ctx.operators[0],
                "created_at": now - timedelta(days=2),
                "expires_at": now + lasts if lasts else None,
            },
        )
    precedent.rebuild()


# --- One call -------------------------------------------------------------------------------


def _caller(ctx: _Context) -> str:
    r = ctx.rng.random()
    if r < 0.03:
        return "anonymous"
    if r < 0.30:
        return ctx.rng.choices(ctx.regulars, ctx.regular_weights)[0]
    if r < 0.55:
        return f"07700 900{ctx.rng.randrange(1000):03d}"
    return f"+44 {ctx.rng.randrange(1000, 2000)} {ctx.rng.randrange(100000, 1000000)}"


def _history(ctx: _Context, caller: str, at: datetime) -> dict[str, Any]:
    if caller == "anonymous":
        return {"withheld": True, "count": 0, "last": None}
    seen = ctx.recent.get(caller)
    if seen is None:
        if caller not in ctx.regulars:
            return {"withheld": False, "count": 0, "last": None}
        seen = ctx.recent[caller] = deque()
    while seen and at - seen[0] > timedelta(days=30):
        seen.popleft()
    count = len(seen)
    seen.append(at)
    return {"withheld": False, "count": count, "last": None}


def _one_call(
    ctx: _Context, received: datetime, local_hour: int, load: float, n: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rng = ctx.rng
    trunk = rng.choices(ctx.trunks, cum_weights=ctx.trunk_weights)[0]
    caller = _caller(ctx)
    night = local_hour < 7 or local_hour >= 21
    busy = load / ctx.max_weight  # 0..1
    deadline = received + ctx.window
    call: dict[str, Any] = {
        "pbx_call_id": f"{int(received.timestamp())}.{n}",
        "channel_id": f"PJSIP/{trunk.name}-h{ctx.token}{n:08x}",
        "pbx_sn": "3631A2124365",
        "caller": caller,
        "called": rng.choice(ctx.dids[trunk.pk]),
        "trunk_id": trunk.pk,
        "received_at": received,
        "deadline": deadline,
        "history": _history(ctx, caller, received),
        "version": 3,
    }
    events: list[dict[str, Any]] = [
        _event(
            received,
            AuditKind.RECEIVED,
            f"Incoming call from {caller} to {call['called']} via websocket",
            via="websocket",
            trunk_name=trunk.name,
            channel_id=call["channel_id"],
        )
    ]
    r = rng.random()
    rule = None
    if r < 0.03 and ctx.rules:
        rule = rng.choice(ctx.rules)
        if rule.match == RuleMatch.PREFIX:
            call["caller"] = f"{rule.pattern} {rng.randrange(1000):03d}"
        else:
            call["caller"] = rule.pattern
        kind, decision = DecidedBy.RULE, rule.action
    elif r < 0.05:
        kind, decision = DecidedBy.TRUNK_POLICY, Decision.ACCEPT
    elif night and r < 0.45:
        kind, decision = DecidedBy.FALLBACK, Decision.ACCEPT
    else:
        kind, decision = DecidedBy.OPERATOR, ""
    if kind != DecidedBy.OPERATOR:
        claimed = received + timedelta(milliseconds=rng.uniform(2, 12))
        call["rule_id"] = rule.pk if rule else None
        note = rule.describe() if rule else ""
        _decision(ctx, call, events, claimed, kind, decision, None, note)
    else:
        _screened(ctx, call, events, busy)
    _confirm(ctx, call, events)
    call["caller_key"] = normalise_for_trunk(call["caller"], trunk)
    return call, events


def _screened(
    ctx: _Context, call: dict[str, Any], events: list[dict[str, Any]], busy: float
) -> None:
    rng = ctx.rng
    received, deadline = call["received_at"], call["deadline"]
    events.append(
        _event(
            received + timedelta(milliseconds=rng.uniform(3, 15)),
            AuditKind.PUSHED,
            "Pushed to operators",
            stream="operators",
        )
    )
    r = rng.random()
    expiry_share = 0.03 + 0.09 * busy
    if r < expiry_share:
        call.update(
            status=CallStatus.EXPIRED, decided_by_kind=DecidedBy.PBX_TIMEOUT, finished_at=deadline
        )
        events.append(_event(deadline, AuditKind.EXPIRED, "Expired: PBX routed the call itself"))
        return
    if r < expiry_share + 0.03:
        hung_up = received + timedelta(seconds=rng.uniform(1, 9))
        call.update(status=CallStatus.GONE, decided_by_kind=DecidedBy.CALLER, finished_at=hung_up)
        events.append(
            _event(
                hung_up,
                AuditKind.PBX_STATE,
                "inbound BYE",
                members=[{"kind": "inbound", "status": "BYE"}],
            )
        )
        events.append(_event(hung_up, AuditKind.GONE, "Gone: the caller hung up while held"))
        return
    seconds = rng.lognormvariate(math.log(2.6 + 1.6 * busy), 0.45)
    latest = ctx.window.total_seconds() - ctx.margin - 0.05
    claimed = received + timedelta(seconds=min(max(seconds, 0.4), latest))
    user = rng.choices(ctx.operators, ctx.operator_weights)[0]
    decision = Decision.ACCEPT if rng.random() < 0.72 else Decision.REFUSE
    _decision(ctx, call, events, claimed, DecidedBy.OPERATOR, decision, user, "")


def _decision(
    ctx: _Context,
    call: dict[str, Any],
    events: list[dict[str, Any]],
    claimed: datetime,
    kind: str,
    decision: str,
    user: AbstractBaseUser | None,
    note: str,
) -> None:
    rng = ctx.rng
    who = (user.get_full_name() or user.get_username()) if user else dict(DecidedBy.choices)[kind]
    endpoint = "call/accept_inbound" if decision == Decision.ACCEPT else "call/refuse_inbound"
    round_trip = rng.lognormvariate(math.log(45), 0.5)
    finished = claimed + timedelta(milliseconds=round_trip + 1)
    actor = user.pk if user else None
    r = rng.random()
    if r < 0.008:
        errcode, errmsg = rng.choice(FAILURES)
        status, message = CallStatus.FAILED, f"Failed: the PBX answered {errcode} {errmsg}"
    elif r < 0.012:
        errcode, errmsg = 70130, "CAHNNEL ID NOT FOUND"
        status, message = (
            CallStatus.GONE,
            f"Gone: the PBX no longer has this call ({errcode} {errmsg})",
        )
    else:
        errcode, errmsg = 0, "SUCCESS"
        status = CallStatus.ACCEPTED if decision == Decision.ACCEPT else CallStatus.REFUSED
        message = (
            "Accepted: the PBX routed the call"
            if status == CallStatus.ACCEPTED
            else "Refused: the PBX dropped the call"
        )
    call.update(
        status=status,
        decision=decision,
        decided_by_kind=kind,
        decided_by_id=actor,
        claimed_at=claimed,
        finished_at=finished,
        pbx_errcode=errcode,
        pbx_errmsg=errmsg,
        pbx_round_trip_ms=None if errcode is None else round_trip,
    )
    claim_msg = f"{who} decided to {decision}" + (f": {note}" if note else "")
    events.append(_event(claimed, AuditKind.CLAIMED, claim_msg, actor, by_kind=kind))
    events.append(
        _event(
            claimed + timedelta(microseconds=300),
            AuditKind.PBX_REQUEST,
            f"POST {endpoint}",
            actor,
            endpoint=endpoint,
            channel_id=call["channel_id"],
        )
    )
    events.append(
        _event(
            finished,
            AuditKind.PBX_RESPONSE,
            f"{'-' if errcode is None else errcode} {errmsg}",
            errcode=errcode,
            errmsg=errmsg,
            round_trip_ms=round(round_trip, 1),
        )
    )
    events.append(_event(finished, status, message, actor))


def _confirm(ctx: _Context, call: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """What the PBX later reported (30011/30012), for most calls; a few contradict our record."""
    rng = ctx.rng
    if rng.random() < 0.05:
        return
    status = call["status"]
    answered = PbxOutcome.ANSWERED if rng.random() < 0.85 else PbxOutcome.NO_ANSWER
    outcome = {
        CallStatus.ACCEPTED: answered,
        CallStatus.REFUSED: PbxOutcome.DROPPED,
        CallStatus.EXPIRED: answered,
        CallStatus.FAILED: answered,
        CallStatus.GONE: PbxOutcome.CALLER_HUNG_UP,
    }[status]
    mismatch = False
    if rng.random() < 0.003 and status in {CallStatus.REFUSED, CallStatus.ACCEPTED}:
        outcome = PbxOutcome.ANSWERED if status == CallStatus.REFUSED else PbxOutcome.DROPPED
        mismatch = True
    talk = rng.randrange(20, 600) if outcome == PbxOutcome.ANSWERED else 0
    at = call["finished_at"] + timedelta(seconds=talk + rng.uniform(1, 20))
    call.update(pbx_outcome=outcome, pbx_outcome_at=at, outcome_mismatch=mismatch)
    cdr = CDR_STATUS[outcome]
    events.append(
        _event(
            at,
            AuditKind.PBX_CDR,
            f"CDR {cdr}, talk {talk}s",
            status=cdr,
            call_duration=talk + 12,
            talk_duration=talk,
            did_number=call["called"],
        )
    )
    if mismatch:
        label = dict(PbxOutcome.choices)[outcome]
        events.append(
            _event(
                at,
                AuditKind.MISMATCH,
                f"Mismatch: we recorded {status}, but the PBX reports: {label}",
                recorded=status,
                pbx_outcome=outcome,
            )
        )


def _event(
    at: datetime, kind: str, message: str, actor: int | None = None, **detail: Any
) -> dict[str, Any]:
    return {"at": at, "kind": kind, "message": message, "actor_id": actor, "detail": detail}


# --- Writers --------------------------------------------------------------------------------


def _columns(model: type[Model], skip_pk: bool) -> list[tuple[str, Any, bool]]:
    """(attname, default, is_json) per column: the generator leaves out whatever has a default,
    so fields added to the models later need no change here."""
    return [
        (f.attname, f.get_default(), f.get_internal_type() == "JSONField")
        for f in model._meta.concrete_fields
        if not (skip_pk and f.primary_key)
    ]


def _column_names(model: type[Model], skip_pk: bool) -> str:
    qn = connection.ops.quote_name
    return ", ".join(
        qn(f.column) for f in model._meta.concrete_fields if not (skip_pk and f.primary_key)
    )


def _values(columns: list[tuple[str, Any, bool]], row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(
        json.dumps(row.get(name, default), separators=(",", ":"))
        if is_json
        else row.get(name, default)
        for name, default, is_json in columns
    )


class _CopyWriter:
    """PostgreSQL: COPY, with call ids reserved from the table's sequence up front."""

    def __init__(self) -> None:
        self.call_fields = _columns(Call, skip_pk=False)
        self.event_fields = _columns(AuditEvent, skip_pk=True)
        self.call_sql = self._copy_sql(Call, skip_pk=False)
        self.event_sql = self._copy_sql(AuditEvent, skip_pk=True)
        self.sequence = self._sequence(Call)

    @staticmethod
    def _copy_sql(model: type[Model], *, skip_pk: bool) -> str:
        table = connection.ops.quote_name(model._meta.db_table)
        return f"COPY {table} ({_column_names(model, skip_pk)}) FROM STDIN"

    @staticmethod
    def _sequence(model: type[Model]) -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_get_serial_sequence(%s, %s)", [model._meta.db_table, "id"])
            return cursor.fetchone()[0]

    def write(self, batch: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> int:
        with connection.cursor() as cursor:
            # Concurrent inserts (a live server) take their ids from the same sequence: no clash.
            cursor.execute(
                "SELECT nextval(%s) FROM generate_series(1, %s)", [self.sequence, len(batch)]
            )
            ids = [row[0] for row in cursor.fetchall()]
            raw = cursor.cursor  # psycopg's own cursor, for copy()
            with raw.copy(self.call_sql) as copy:
                for pk, (call, _) in zip(ids, batch, strict=True):
                    copy.write_row(_values(self.call_fields, {"id": pk, **call}))
            count = 0
            with raw.copy(self.event_sql) as copy:
                for pk, (_, events) in zip(ids, batch, strict=True):
                    for event in events:
                        event["call_id"] = pk
                        copy.write_row(_values(self.event_fields, event))
                        count += 1
        return count


class _SqliteWriter:
    """SQLite (the demo): plain executemany. The seeding transaction holds SQLite's write lock
    (BEGIN IMMEDIATE), so ids can be counted on from the current maximum."""

    def __init__(self) -> None:
        self.call_fields = _columns(Call, skip_pk=False)
        self.event_fields = _columns(AuditEvent, skip_pk=True)
        self.call_sql = self._insert_sql(Call, skip_pk=False)
        self.event_sql = self._insert_sql(AuditEvent, skip_pk=True)
        self.datetimes = {
            f.attname
            for model in (Call, AuditEvent)
            for f in model._meta.concrete_fields
            if f.get_internal_type() == "DateTimeField"
        }
        with connection.cursor() as cursor:
            table = connection.ops.quote_name(Call._meta.db_table)
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}")  # noqa: S608 - our table
            self.next_id = cursor.fetchone()[0] + 1

    @staticmethod
    def _insert_sql(model: type[Model], *, skip_pk: bool) -> str:
        table = connection.ops.quote_name(model._meta.db_table)
        columns = _column_names(model, skip_pk)
        marks = ", ".join("%s" for _ in columns.split(", "))
        return f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - model names

    def _row(self, columns: list[tuple[str, Any, bool]], row: dict[str, Any]) -> tuple[Any, ...]:
        for name in self.datetimes & row.keys():
            row[name] = _sqlite_datetime(row[name])
        return _values(columns, row)

    def write(self, batch: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> int:
        call_rows, event_rows = [], []
        for call, events in batch:
            pk = self.next_id
            self.next_id += 1
            call_rows.append(self._row(self.call_fields, {"id": pk, **call}))
            for event in events:
                event["call_id"] = pk
                event_rows.append(self._row(self.event_fields, event))
        with connection.cursor() as cursor:
            cursor.executemany(self.call_sql, call_rows)
            cursor.executemany(self.event_sql, event_rows)
        return len(event_rows)


def _sqlite_datetime(value: datetime | None) -> str | None:
    """What Django's SQLite backend stores for an aware datetime: naive UTC text."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
