"""What the card's context costs (``manage.py bench --suite --parts card,push_context``).

- **card**: reading what the database knows about one caller (``card_context``: the contact, the
  notes in force and the precedent, with the suggestion) for numbers of a call table of
  ``--card-calls`` calls (1,000,000 by default, seeded with ``screening/devtools/seed.py``, which
  also rebuilds every number's precedent); p50/p99 over ``--card-reads`` reads, in process
  (queries only, no network). It needs no server, so a suite of only this part starts none.
- **push_context**: the push part at ``--context-operators`` operators twice over, alternating:
  calls from new numbers (an empty card) and calls from numbers with a contact, notes and
  precedent on the card, to see what the context costs the push.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from screening.calls import context, precedent
from screening.devtools.bench.stats import summarize
from screening.models import (
    Call,
    CallerNote,
    CallerPrecedent,
    Contact,
    ContactNumber,
    Decision,
)

NOTED = 200  # of the sampled numbers, this many get two notes each (so the notes query finds some)


def measure_card(calls: int, reads: int, seed: int = 11) -> dict[str, Any]:
    """Seed up to ``calls`` calls, then time ``card_context`` for ``reads`` sampled numbers."""
    from screening.devtools.seed import seed_history

    existing = Call.objects.count()
    seeded: dict[str, Any] = {"calls_before": existing}
    if existing < calls:
        print(f"bench: card, seeding {calls - existing:,} calls (with precedent)", flush=True)
        started = time.monotonic()
        result = seed_history(calls - existing, days=180, seed=seed)
        seeded.update(seeded_calls=result.calls, seed_s=round(time.monotonic() - started, 1))
    started = time.monotonic()
    seeded["precedent_rows"] = precedent.rebuild()
    seeded["rebuild_s"] = round(time.monotonic() - started, 1)
    rng = random.Random(seed)  # noqa: S311 - a sample, not security
    numbers = _sample(rng, reads)
    _add_notes(rng, numbers[:NOTED])
    rng.shuffle(numbers)
    now = timezone.now()
    for number in numbers[:50]:  # warm-up: connection, statement caches
        context.card_context(number, now)
    samples, summaries = [], []
    for number in numbers:
        started_ns = time.perf_counter_ns()
        card = context.card_context(number, now)
        samples.append((time.perf_counter_ns() - started_ns) / 1e6)
        summaries.append(card)
    with_precedent = sum(1 for c in summaries if c["precedent"])
    return {
        "calls": Call.objects.count(),
        **seeded,
        "reads": len(samples),
        "with_precedent": with_precedent,
        "with_notes": sum(1 for c in summaries if c["notes"]),
        "with_suggestion": sum(1 for c in summaries if c["suggestion"]),
        "card_context_ms": summarize(samples),
    }


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
