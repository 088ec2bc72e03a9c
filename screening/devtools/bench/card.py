"""What the card's context costs (``manage.py bench --suite --parts card,push_context``).

- **card**: reading what the database knows about one caller, for numbers of a call table of
  ``--card-calls`` calls (1,000,000 by default; on PostgreSQL generated in the database, with
  every number's precedent rebuilt from them): the precedent alone, the notes alone, and the
  whole ``card_context`` (contact, notes, precedent, suggestion); p50/p99 over ``--card-reads``
  reads, in process (queries only, no network). It needs no server, so a suite of only this part
  starts none.
- **push_context**: the push part at ``--context-operators`` operators twice over, alternating:
  calls from new numbers (an empty card) and calls from numbers with a contact, notes and
  precedent on the card, to see what the context costs the push.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from screening.calls import context, precedent
from screening.calls.roles import setup_roles
from screening.devtools.bench.stats import summarize
from screening.models import (
    Call,
    CallerNote,
    CallerPrecedent,
    Contact,
    ContactNumber,
    Decision,
    Trunk,
)

NOTED = 200  # at least this many sampled numbers (or a tenth) get two notes each


def measure_card(calls: int, reads: int, seed: int = 11) -> dict[str, Any]:
    """Fill the call table up to ``calls`` calls, rebuild every number's precedent, then time
    reading the precedent, the notes, and the whole ``card_context`` for ``reads`` numbers."""
    existing = Call.objects.count()
    seeded: dict[str, Any] = {"calls_before": existing}
    if existing < calls:
        print(f"bench: card, writing {calls - existing:,} calls", flush=True)
        started = time.monotonic()
        seeded["seeded_calls"] = _fill(calls - existing, seed)
        seeded["seed_s"] = round(time.monotonic() - started, 1)
    print("bench: card, rebuilding every number's precedent", flush=True)
    started = time.monotonic()
    seeded["precedent_rows"] = precedent.rebuild()
    seeded["rebuild_s"] = round(time.monotonic() - started, 1)
    rng = random.Random(seed)  # noqa: S311 - a sample, not security
    numbers = _sample(rng, reads)
    _add_notes(rng, numbers[: max(NOTED, reads // 10)])
    rng.shuffle(numbers)
    now = timezone.now()
    reads_by_kind: dict[str, Any] = {
        "precedent": lambda n: precedent.card_summary(n, now),
        "notes": lambda n: context.notes_for(n, now),
        "card_context": lambda n: context.card_context(n, now),
    }
    timings: dict[str, dict[str, Any]] = {}
    cards: list[dict[str, Any]] = []
    for kind, read in reads_by_kind.items():
        for number in numbers[:50]:  # warm-up: connection, statement caches
            read(number)
        samples = []
        for number in numbers:
            started_ns = time.perf_counter_ns()
            got = read(number)
            samples.append((time.perf_counter_ns() - started_ns) / 1e6)
            if kind == "card_context":
                cards.append(got)
        timings[f"{kind}_ms"] = summarize(samples)
    return {
        "calls": Call.objects.count(),
        **seeded,
        "reads": len(numbers),
        "with_precedent": sum(1 for c in cards if c["precedent"]),
        "with_notes": sum(1 for c in cards if c["notes"]),
        "with_suggestion": sum(1 for c in cards if c["suggestion"]),
        **timings,
    }


def _fill(count: int, seed: int) -> int:
    """``count`` decided calls over 180 days from ~400,000 numbers, a few of them calling very
    often: on PostgreSQL generated inside the database (a minute, not the seeder's half hour with
    its audit rows); elsewhere with the demo seeder."""
    if connection.vendor != "postgresql":
        from screening.devtools.seed import seed_history

        return seed_history(count, days=180, seed=seed).calls
    setup_roles()
    trunk, _ = Trunk.objects.get_or_create(name="peer-to-41", defaults={"label": "Main line"})
    user_model = get_user_model()
    users = [
        user_model.objects.get_or_create(username=f"card-op{i}", defaults={"first_name": f"Op{i}"})[
            0
        ]
        for i in range(6)
    ]
    ids = ",".join(str(int(u.pk)) for u in users)
    number = "lpad(floor(z * 400000)::int::text, 6, '0')"
    expressions = {
        "pbx_call_id": "'card.' || i || '.' || %(token)s",
        "channel_id": "'PJSIP/card-' || i || '-' || %(token)s",
        "pbx_sn": "'BENCH'",
        "caller": f"'+447700' || {number}",
        "called": "'+442079460000'",
        "trunk_id": str(int(trunk.pk)),
        "received_at": "t",
        "deadline": "t + interval '10 seconds'",
        "status": "CASE WHEN r < 0.68 THEN 'accepted' WHEN r < 0.88 THEN 'refused' "
        "WHEN r < 0.97 THEN 'expired' ELSE 'gone' END",
        "version": "3",
        "decision": "CASE WHEN r < 0.68 THEN 'accept' WHEN r < 0.88 THEN 'refuse' ELSE '' END",
        "decided_by_kind": "CASE WHEN r < 0.88 AND r2 < 0.9 THEN 'operator' "
        "WHEN r < 0.88 THEN 'rule' WHEN r < 0.97 THEN 'pbx_timeout' ELSE 'caller' END",
        "decided_by_id": f"CASE WHEN r < 0.88 AND r2 < 0.9 THEN "
        f"(ARRAY[{ids}])[1 + floor(r2 / 0.9 * {len(users)})::int] END",
        "claimed_at": "CASE WHEN r < 0.88 THEN t + interval '3 seconds' END",
        "finished_at": "t + interval '3100 milliseconds'",
        "pbx_errmsg": "''",
        "pbx_outcome": "''",
        "outcome_mismatch": "false",
        "history": "'{}'::jsonb",
        "caller_key": f"'447700' || {number}",
        "caller_name": "''",
        "caller_token": "''",  # as calls stored before pseudonyms (filled in when audited)
        "context": "'{}'::jsonb",
        "reason": "CASE WHEN r >= 0.68 AND r < 0.88 AND r2 < 0.6 THEN 'spam' ELSE '' END",
        "reason_note": "''",
        "suggestion": "''",
    }
    fields = [f for f in Call._meta.concrete_fields if not f.primary_key]
    missing = [f.column for f in fields if not f.null and f.column not in expressions]
    if missing:  # a new column: say so rather than fail on a NOT NULL violation
        raise RuntimeError(f"the card bench does not fill {', '.join(missing)}")
    columns = [f.column for f in fields if f.column in expressions]
    statement = (
        f"INSERT INTO {Call._meta.db_table} ({', '.join(columns)}) "  # noqa: S608 - our own
        f"SELECT {', '.join(expressions[c] for c in columns)} FROM ("
        "SELECT i, power(random(), 3) AS z, random() AS r, random() AS r2, "
        "now() - random() * interval '180 days' AS t "
        "FROM generate_series(%(first)s, %(last)s) AS i) AS g"
    )
    token = f"{seed}-{time.time_ns()}"
    written = 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [(seed % 1000) / 1000])
        for first in range(1, count + 1, 200_000):
            last = min(count, first + 199_999)
            cursor.execute(statement, {"token": token, "first": first, "last": last})
            written += last - first + 1
            print(f"  {written:,} calls", flush=True)
    return written


def _sample(rng: random.Random, reads: int) -> list[str]:
    """Half the busiest numbers (long histories), half drawn at random, a few never seen."""
    busiest = list(
        CallerPrecedent.objects.order_by("-people_accepted", "number").values_list(
            "number", flat=True
        )[: reads // 2]
    )
    ids = list(CallerPrecedent.objects.values_list("pk", flat=True))
    drawn = rng.sample(ids, min(len(ids), reads - len(busiest) - reads // 20))
    random_numbers = list(
        CallerPrecedent.objects.filter(pk__in=drawn).values_list("number", flat=True)
    )
    unseen = [f"4479{rng.randrange(10**8):08d}" for _ in range(reads // 20)]
    return busiest + random_numbers + unseen


def _add_notes(rng: random.Random, numbers: list[str]) -> None:
    now = timezone.now()
    notes = [
        CallerNote(number=n, text=text, created_at=now - timedelta(days=rng.randrange(30)))
        for n in numbers
        for text in ("Asked for accounts; put through.", "Called three times yesterday.")
    ]
    CallerNote.objects.bulk_create(notes)


# --- push with and without context ------------------------------------------------------------


def context_callers(count: int) -> list[str]:
    """``count`` caller numbers, as the simulator sends them, each with a contact, two notes and
    a precedent row of people's and automatic decisions (written directly, in bulk)."""
    now = timezone.now()
    callers = [f"07800{i:06d}" for i in range(count)]
    keys = [f"447800{i:06d}" for i in range(count)]
    with transaction.atomic():
        contacts = Contact.objects.bulk_create(
            [
                Contact(name=f"Caller {i:04d}", organisation="Bench & Sons Ltd", note="Supplier")
                for i in range(count)
            ]
        )
        ContactNumber.objects.bulk_create(
            [
                ContactNumber(contact=c, number=caller, normalised=key, label="work")
                for c, caller, key in zip(contacts, callers, keys, strict=True)
            ]
        )
        CallerNote.objects.bulk_create(
            [
                CallerNote(number=key, text=text, created_at=now - timedelta(hours=h))
                for key in keys
                for h, text in ((2, "Courier expected, accept until 17:00."), (30, "Polite."))
            ]
        )
        CallerPrecedent.objects.bulk_create(
            [
                CallerPrecedent(
                    number=key,
                    as_of=now - timedelta(days=2),
                    people_accept_weight=1.5,
                    people_refuse_weight=5.2,
                    auto_refuse_weight=2.0,
                    people_accepted=2,
                    people_refused=7,
                    auto_refused=2,
                    operators={"1": [1, 3], "2": [1, 2], "3": [0, 1], "4": [0, 1]},
                    last={
                        "decision": Decision.REFUSE,
                        "reason": "spam",
                        "note": "",
                        "by": "Bench0001",
                        "by_id": 1,
                        "at": int((now - timedelta(days=2)).timestamp() * 1000),
                        "call": None,
                    },
                )
                for key in keys
            ]
        )
    return callers
