"""Retention: callers' numbers older than ``RETENTION_DAYS`` replaced by their pseudonym.

Calls received before the limit, their audit rows, notes written before it and review-queue
answers given before it keep everything except the caller's number, which becomes the number's
keyed pseudonym (screening.calls.pseudonyms): the same for every call of one number, so the
statistics, the precedent counts and the audit chain still hold (docs/retention.md). A number's
precedent row moves to its pseudonym once none of its calls is left inside the limit; until then
its newer calls still show it on the card.

The work goes in steps of at most ``BATCH`` calls (and as many notes and review answers), each one
transaction that also writes one audit row saying what it did, so memory and lock time stay
bounded and no rewrite is ever committed without its row. Only rows still holding a number are
picked, so a second run changes nothing. New calls are far inside the limit, so intake never
waits on a step; a late write to an old call waits for its row lock and is not overwritten.

Once a day one server process runs it (``scheduler``, a screening.periodic job), in a task of its
own, one step at a time in the database pool, so the sweep and intake never wait for it.
``manage.py apply_retention`` runs it now.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from screening import periodic, runtime
from screening.calls import audit_rewrite, precedent, pseudonyms, store
from screening.models import AuditKind, Call, CallerNote, ReviewAction, ReviewKind

log = logging.getLogger("screening.calls.retention")

BATCH = 500  # calls (and notes, and review answers) per transaction
RUN_EVERY_SECONDS = 24 * 3600
RETRY_SECONDS = 3600  # after a failed run: try again this soon, not a day later
CLAIM_EVERY_SECONDS = 3600.0  # how often a process asks the cache whether a run is due


def enabled() -> bool:
    return settings.RETENTION_DAYS > 0


def cutoff(now: datetime | None = None) -> datetime:
    """Rows from before this moment lose their numbers."""
    return (now or timezone.now()) - timedelta(days=settings.RETENTION_DAYS)


@dataclass
class RetentionResult:
    cutoff: datetime
    calls: int = 0
    audit_rows: int = 0
    notes: int = 0
    reviews: int = 0
    precedents: int = 0
    steps: int = 0  # transactions (each with its audit row)

    def add(self, other: RetentionResult) -> None:
        for name in ("calls", "audit_rows", "notes", "reviews", "precedents", "steps"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def changed(self) -> bool:
        return bool(self.calls or self.notes or self.reviews or self.precedents)

    def describe(self) -> str:
        before = f"{timezone.localtime(self.cutoff):%Y-%m-%d %H:%M}"
        return (
            f"{self.calls} calls ({self.audit_rows} of their audit rows), {self.notes} notes and "
            f"{self.reviews} review answers from before {before} pseudonymised; "
            f"{self.precedents} precedent rows moved to their pseudonym"
        )


def calls_due(limit: datetime) -> QuerySet[Call]:
    """Calls from before ``limit`` that still hold a number (withheld calls hold none)."""
    still = ~Q(caller=F("caller_token")) | (~Q(caller_key="") & ~Q(caller_key=F("caller_token")))
    return Call.objects.filter(received_at__lt=limit).exclude(caller="").filter(still)


def notes_due(limit: datetime) -> QuerySet[CallerNote]:
    return CallerNote.objects.filter(created_at__lt=limit).exclude(
        number__startswith=pseudonyms.PREFIX
    )


def reviews_due(limit: datetime) -> QuerySet[ReviewAction]:
    """Review answers about a number: a block suggestion names it in ``subject``, a possible wrong
    refusal in ``detail["number"]`` (picked by kind: which still hold one is checked per row)."""
    block = Q(kind=ReviewKind.BLOCK) & ~Q(subject__startswith=pseudonyms.PREFIX)
    return ReviewAction.objects.filter(block | Q(kind=ReviewKind.WRONG_REFUSAL), at__lt=limit)


@dataclass
class Run:
    """One retention run: steps until nothing is left, each resuming after the rows the last one
    looked at (so a row that cannot change never makes a step repeat)."""

    cutoff: datetime
    batch: int = BATCH
    after: dict[str, int] = field(default_factory=lambda: {"call": 0, "note": 0, "review": 0})

    def step(self) -> RetentionResult | None:
        """One transaction; None when there was nothing left to look at."""
        calls = list(
            calls_due(self.cutoff)
            .filter(pk__gt=self.after["call"])
            .order_by("pk")
            .values_list("pk", "caller_key", "caller_token")[: self.batch]
        )
        notes = list(
            notes_due(self.cutoff).filter(pk__gt=self.after["note"]).order_by("pk")[: self.batch]
        )
        reviews = list(
            reviews_due(self.cutoff)
            .filter(pk__gt=self.after["review"])
            .order_by("pk")[: self.batch]
        )
        if not (calls or notes or reviews):
            return None
        result = RetentionResult(self.cutoff, steps=1)
        with transaction.atomic():
            done = audit_rewrite.pseudonymise(
                [pk for pk, _, _ in calls],
                f"retention: numbers of calls before {self.cutoff:%Y-%m-%d %H:%M}",
            )
            result.calls, result.audit_rows = done.calls, done.audit_rows
            result.precedents = self._move_precedents(
                {key: token or pseudonyms.token(key) for _, key, token in calls if key}
            )
            result.notes = _pseudonymise_notes([n.pk for n in notes])
            result.reviews = _pseudonymise_reviews([r.pk for r in reviews])
            if result.changed:
                store.audit(
                    None,
                    AuditKind.RETENTION,
                    f"Retention ({settings.RETENTION_DAYS} days): " + result.describe(),
                    days=settings.RETENTION_DAYS,
                    before=self.cutoff.isoformat(),
                    **{k: v for k, v in asdict(result).items() if k not in ("cutoff", "steps")},
                )
        if calls:
            self.after["call"] = calls[-1][0]
        if notes:
            self.after["note"] = notes[-1].pk
        if reviews:
            self.after["review"] = reviews[-1].pk
        return result

    def _move_precedents(self, tokens: dict[str, str]) -> int:
        """The precedent rows (number -> pseudonym its calls were stored with) of numbers none of
        whose calls is left inside the limit."""
        if not tokens:
            return 0
        recent = set(
            Call.objects.filter(caller_key__in=list(tokens), received_at__gte=self.cutoff)
            .values_list("caller_key", flat=True)
            .distinct()
        )
        return sum(precedent.rekey(key, tokens[key]) for key in sorted(set(tokens) - recent))

    def until_done(self) -> RetentionResult:
        total = RetentionResult(self.cutoff)
        while (result := self.step()) is not None:
            total.add(result)
        return total


def _pseudonymise_notes(pks: list[int]) -> int:
    notes = list(CallerNote.objects.select_for_update().filter(pk__in=pks))
    changed = []
    for note in notes:
        if pseudonyms.is_token(note.number):
            continue
        token = pseudonyms.token(note.number)
        text = pseudonyms.scrub(note.text, pseudonyms.forms(note.number), token)
        note.text = audit_rewrite.scrub_typed(text, note.number, token)
        note.number = token
        changed.append(note)
    return CallerNote.objects.bulk_update(changed, ["number", "text"]) if changed else 0


def _pseudonymise_reviews(pks: list[int]) -> int:
    changed = []
    for action in ReviewAction.objects.select_for_update().filter(pk__in=pks):
        if action.kind == ReviewKind.BLOCK:
            number = action.subject
            action.subject = pseudonyms.token(number)
        else:
            number = _named(action.detail)
            if not number:
                continue
        action.detail = pseudonyms.scrub(
            action.detail, pseudonyms.forms(number), pseudonyms.token(number)
        )
        changed.append(action)
    return ReviewAction.objects.bulk_update(changed, ["subject", "detail"]) if changed else 0


def apply(now: datetime | None = None, *, batch: int = BATCH) -> RetentionResult:
    """Run retention to the end now (``manage.py apply_retention``)."""
    return Run(cutoff(now), batch).until_done()


def pending(now: datetime | None = None) -> RetentionResult:
    """What a run would change now, counted without changing anything (``--dry-run``)."""
    limit = cutoff(now)
    reviews = reviews_due(limit).values_list("kind", "detail")
    return RetentionResult(
        limit,
        calls=calls_due(limit).count(),
        notes=notes_due(limit).count(),
        reviews=sum(1 for kind, detail in reviews if kind == ReviewKind.BLOCK or _named(detail)),
    )


def _named(detail: Any) -> str:
    """The number a wrong-refusal answer names, if it still holds one."""
    number = str((detail or {}).get("number") or "") if isinstance(detail, dict) else ""
    return "" if pseudonyms.is_token(number) else number


# --- the sweeper's schedule ------------------------------------------------------------------


async def _run_in_background() -> None:
    started = time.monotonic()
    run = Run(cutoff())
    total = RetentionResult(run.cutoff)
    try:
        # One step per trip to the database pool: intake's work queues between steps, not
        # behind the whole run.
        while (result := await runtime.run_blocking(run.step)) is not None:
            total.add(result)
    except Exception as exc:
        log.exception("retention run failed after %s; retried within the hour", total.steps)
        raise periodic.Failed from exc
    log.info("retention: %s (%.0f ms)", total.describe(), (time.monotonic() - started) * 1000)


scheduler = periodic.Periodic(
    "retention",
    _run_in_background,
    every=lambda: RUN_EVERY_SECONDS,
    enabled=enabled,
    retry_after=RETRY_SECONDS,
    claim_every=CLAIM_EVERY_SECONDS,
)
