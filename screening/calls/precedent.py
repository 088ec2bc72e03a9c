"""What the team did with a number before (``CallerPrecedent``, one row per normalised number),
and the shadow suggestion read from it (docs/precedent.md).

The row is kept up to date in the transaction that records a call's final decision
(``record_decision``, from ``screening.calls.decisions.finish``), so a card reads it with one
indexed lookup however many calls there are; ``rebuild`` computes every row from the call table
(existing installs, the demo seeder) and gives the same numbers.

Weights decay: a decision weighs 1 when it is made and half as much every half-life
(``PRECEDENT_HALF_LIFE_DAYS``). A row stores its sums as they stood at ``as_of`` and they are
decayed on read and on update, so nothing ever needs a periodic job. A decision older than
``as_of`` (two processes finishing calls in the other order) is decayed to ``as_of`` and added, so
the sums do not depend on the order decisions arrive in.

People's decisions (an operator pressed Accept or Refuse) and automatic ones (a rule, the fallback
or the trunk policy) are kept apart: only people's make the probability and the suggestion, since
a rule refusing a number a hundred times says nothing new about it.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction

from screening.calls import pseudonyms, sql
from screening.calls.payload import epoch_ms, user_name
from screening.i18n import neutral
from screening.models import CallerPrecedent, CallStatus, DecidedBy, Decision, RefusalReason

log = logging.getLogger("screening.calls.precedent")

# The prior: Beta(a, b) on the probability of refusal, as if the team had already refused once and
# accepted once. A first refusal then reads 2/3, not 1; a number with no decisions reads 1/2.
PRIOR_REFUSE = 1.0
PRIOR_ACCEPT = 1.0
# z for the half-width of the (normal approximation of the) 95 % credible interval.
Z95 = 1.96

AUTO_KINDS = frozenset({DecidedBy.RULE, DecidedBy.FALLBACK, DecidedBy.TRUNK_POLICY})
FINAL = frozenset({CallStatus.ACCEPTED, CallStatus.REFUSED})
_WEIGHT_FIELDS = (
    "people_accept_weight",
    "people_refuse_weight",
    "auto_accept_weight",
    "auto_refuse_weight",
)
_FIELDS = (
    "as_of",
    *_WEIGHT_FIELDS,
    "people_accepted",
    "people_refused",
    "auto_accepted",
    "auto_refused",
    "operators",
    "last",
)


def half_life() -> timedelta:
    return timedelta(days=settings.PRECEDENT_HALF_LIFE_DAYS)


def decay(weight: float, since: datetime, until: datetime) -> float:
    """``weight`` as it stood at ``since``, decayed to ``until`` (never grows going back)."""
    if not weight or until <= since:
        return weight
    return weight * 2.0 ** (-(until - since) / half_life())


# --- Keeping the rows up to date ------------------------------------------------------------


def record_decision(call: Any, at: datetime) -> None:
    """Inside the transaction that gave ``call`` its final status: count its decision.

    Calls that end undecided (expired, gone, failed) and withheld numbers count for nothing. The
    row is locked (``SELECT … FOR UPDATE``; a missing one is inserted with ``ON CONFLICT DO
    NOTHING``), so two processes finishing calls of one number at once both count."""
    kind = _kind(call.decided_by_kind)
    if call.status not in FINAL or not call.caller_key or kind is None:
        return
    last = _last_of(call, at) if kind == "people" else None
    rows = CallerPrecedent.objects.select_for_update()
    row = rows.filter(number=call.caller_key).first()
    if row is None:
        # A first decision on the number: its row is inserted already counting it, unless
        # another process created the row meanwhile; then that row is locked and counted in.
        row = CallerPrecedent(number=call.caller_key, as_of=at)
        _apply(row, call.decision, kind, call.decided_by_id, at, last)
        if _insert_new(row):
            return
        row = rows.get(number=call.caller_key)
    _apply(row, call.decision, kind, call.decided_by_id, at, last)
    row.save(update_fields=_FIELDS)


def _insert_new(row: CallerPrecedent) -> bool:
    """INSERT ``row`` unless its number has a row already (ON CONFLICT DO NOTHING, which SQLite
    and PostgreSQL both take); whether it was inserted. One statement where the ORM would need
    an insert-or-nothing, a read back and an UPDATE."""
    statement = (
        f"{sql.insert(CallerPrecedent)} ON CONFLICT ({sql.column(CallerPrecedent, 'number')}) "
        "DO NOTHING"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement, sql.insert_params([row]))
        return cursor.rowcount == 1


def reason_recorded(call: Any) -> None:
    """A reason was recorded (or edited) on ``call`` after its decision: if it is the number's
    last decision by a person, the card's "last: spam, by …" shows it from now on. Call it inside
    the transaction that saves the reason. At most one query when nothing changes."""
    if not call.caller_key:
        return
    with transaction.atomic():
        row = CallerPrecedent.objects.select_for_update().filter(number=call.caller_key).first()
        if row is None or (row.last or {}).get("call") != call.pk:
            return
        row.last = {**row.last, "reason": call.reason, "note": call.reason_note[:200]}
        row.save(update_fields=["last"])


def _kind(decided_by_kind: str) -> str | None:
    if decided_by_kind == DecidedBy.OPERATOR:
        return "people"
    if decided_by_kind in AUTO_KINDS:
        return "auto"
    return None


def _last_of(call: Any, at: datetime) -> dict[str, Any]:
    return {
        "decision": call.decision,
        "reason": call.reason,
        "note": call.reason_note[:200],
        "by": user_name(call.decided_by) if call.decided_by_id else "",
        "by_id": call.decided_by_id,
        "at": epoch_ms(at),
        "call": call.pk,
    }


def _apply(
    row: CallerPrecedent,
    decision: str,
    kind: str,
    user_id: int | None,
    at: datetime,
    last: dict[str, Any] | None,
) -> None:
    """Add one decision made at ``at`` to ``row`` (in memory)."""
    if at > row.as_of:
        for name in _WEIGHT_FIELDS:
            setattr(row, name, decay(getattr(row, name), row.as_of, at))
        row.as_of = at
        weight = 1.0
    else:  # an older decision arriving late: decayed to where the row stands
        weight = decay(1.0, at, row.as_of)
    refused = decision == Decision.REFUSE
    prefix = f"{kind}_{'refuse' if refused else 'accept'}"
    setattr(row, f"{prefix}_weight", getattr(row, f"{prefix}_weight") + weight)
    count = f"{kind}_{'refused' if refused else 'accepted'}"
    setattr(row, count, getattr(row, count) + 1)
    if kind != "people":
        return
    if user_id is not None:
        operators = dict(row.operators or {})
        tally = list(operators.get(str(user_id), [0, 0]))
        tally[1 if refused else 0] += 1
        operators[str(user_id)] = tally
        row.operators = operators
    if last is not None and (not row.last or row.last.get("at", 0) <= last["at"]):
        row.last = last


def rekey(number: str, token: str) -> bool:
    """Inside a transaction: move ``number``'s row to its pseudonym ``token`` (retention, erasure),
    so the counts stay while the number goes. When ``token`` has a row already (the number's
    older calls were pseudonymised before), the two are merged: counts and per-operator tallies
    add, weights add once decayed to the later ``as_of``, and the later ``last`` wins. Returns
    whether a row was moved."""
    rows = CallerPrecedent.objects.select_for_update()
    moving = rows.filter(number=number).first()
    if moving is None or number == token:
        return False
    kept = rows.filter(number=token).first()
    if moving.last:
        note = moving.last.get("note") or ""
        moving.last = {**moving.last, "note": pseudonyms.scrub(note, (number,), token)}
    if kept is None:
        moving.number = token
        moving.save(update_fields=["number", "last"])
        return True
    as_of = max(kept.as_of, moving.as_of)
    for name in _WEIGHT_FIELDS:
        total = decay(getattr(kept, name), kept.as_of, as_of)
        total += decay(getattr(moving, name), moving.as_of, as_of)
        setattr(kept, name, total)
    kept.as_of = as_of
    for name in ("people_accepted", "people_refused", "auto_accepted", "auto_refused"):
        setattr(kept, name, getattr(kept, name) + getattr(moving, name))
    operators = {k: list(v) for k, v in (kept.operators or {}).items()}
    for user, (accepted, refused) in (moving.operators or {}).items():
        tally = operators.setdefault(user, [0, 0])
        tally[0] += accepted
        tally[1] += refused
    kept.operators = operators
    if moving.last and (not kept.last or kept.last.get("at", 0) <= moving.last.get("at", 0)):
        kept.last = moving.last
    moving.delete()
    kept.save(update_fields=_FIELDS)
    return True


def rebuild(numbers: Iterable[str] | None = None, *, batch: int = 2000) -> int:
    """Recompute precedent rows from the call table: every number, or only ``numbers``.
    Returns how many rows were written. Streams the calls, one number at a time; each batch of
    rows is replaced in its own transaction."""
    from screening.models import Call

    calls = Call.objects.filter(status__in=FINAL).exclude(caller_key="")
    if numbers is not None:
        calls = calls.filter(caller_key__in=list(numbers))
    calls = calls.filter(decided_by_kind__in=[DecidedBy.OPERATOR, *AUTO_KINDS])
    rows_in = calls.order_by("caller_key", "finished_at", "pk").values_list(
        "pk",
        "caller_key",
        "decision",
        "decided_by_kind",
        "decided_by_id",
        "finished_at",
        "received_at",
        "reason",
        "reason_note",
    )
    names = _user_names()
    written = 0
    pending: list[CallerPrecedent] = []
    current: CallerPrecedent | None = None
    with transaction.atomic():
        # Numbers that no longer have any decided call lose their row too.
        stale = CallerPrecedent.objects.all()
        if numbers is not None:
            stale = stale.filter(number__in=list(numbers))
        stale.delete()
    for (
        pk,
        number,
        decision,
        by_kind,
        user_id,
        finished,
        received,
        reason,
        note,
    ) in rows_in.iterator(chunk_size=5000):
        at = finished or received
        if current is None or current.number != number:
            if current is not None:
                pending.append(current)
            current = CallerPrecedent(number=number, as_of=at, operators={}, last={})
            if len(pending) >= batch:
                written += _save(pending)
                pending = []
        kind = _kind(by_kind)
        last = None
        if kind == "people":
            last = {
                "decision": decision,
                "reason": reason,
                "note": note[:200],
                "by": names.get(user_id, ""),
                "by_id": user_id,
                "at": epoch_ms(at),
                "call": pk,
            }
        _apply(current, decision, kind or "auto", user_id, at, last)
    if current is not None:
        pending.append(current)
    written += _save(pending)
    log.info("precedent rebuilt: %d numbers", written)
    return written


def _save(rows: list[CallerPrecedent]) -> int:
    if not rows:
        return 0
    with transaction.atomic():
        CallerPrecedent.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["number"],
            update_fields=list(_FIELDS),
        )
    return len(rows)


def _user_names() -> dict[int, str]:
    return {user.pk: user_name(user) for user in get_user_model().objects.all()}


# --- Reading --------------------------------------------------------------------------------


def probability(refuse_weight: float, accept_weight: float) -> float:
    """The smoothed probability that people refuse the number: the mean of the Beta posterior,
    (R + a) / (R + A + a + b), with R and A the decayed sums of refusals and acceptances."""
    return (refuse_weight + PRIOR_REFUSE) / (
        refuse_weight + accept_weight + PRIOR_REFUSE + PRIOR_ACCEPT
    )


def card_summary(number: str, now: datetime) -> dict[str, Any] | None:
    """The card's precedent for ``number`` (normalised), or None when nothing ever decided it.
    One indexed query (the row's unique number).

    ``decided``/``refused``: people's decisions (plain counts); ``operators``: how many people
    decided it; ``last``: people's latest decision; ``probability``: smoothed probability of
    refusal from people's decayed decisions (None without any); ``weight``: those decisions'
    decayed sum (the effective number of decisions); ``sureness``: weight / (weight + a + b), the
    share of the estimate that is evidence rather than prior, 0 to 1; ``margin``: half-width of
    the 95 % credible interval around ``probability``; ``auto_*``: rules, fallback, trunk policy.
    """
    if not number:
        return None
    # This runs for every incoming call before its push: one fixed statement (screening.calls.sql)
    rows = sql.fetch(_summary_sql(connection.vendor), [number])
    if not rows:
        return None
    values = dict(zip(_SUMMARY_FIELDS, rows[0], strict=True))
    values["as_of"] = sql.to_datetime(values["as_of"])
    for name in ("operators", "last"):
        if isinstance(values[name], str | bytes):
            values[name] = json.loads(values[name])
    # The row's values as attributes, without building a model instance (a tenth of a ms).
    return summarise(SimpleNamespace(**values), now)


_SUMMARY_FIELDS = (
    "as_of",
    "people_accept_weight",
    "people_refuse_weight",
    "people_accepted",
    "people_refused",
    "auto_accepted",
    "auto_refused",
    "operators",
    "last",
)


@functools.cache
def _summary_sql(vendor: str) -> str:
    columns = ", ".join(sql.column(CallerPrecedent, f) for f in _SUMMARY_FIELDS)
    where = sql.column(CallerPrecedent, "number")
    return f"SELECT {columns} FROM {sql.table(CallerPrecedent)} WHERE {where} = %s"  # noqa: S608


def summarise(row: CallerPrecedent | SimpleNamespace, now: datetime) -> dict[str, Any]:
    refuse_w = decay(row.people_refuse_weight, row.as_of, now)
    accept_w = decay(row.people_accept_weight, row.as_of, now)
    weight = refuse_w + accept_w
    decided = row.people_accepted + row.people_refused
    p = probability(refuse_w, accept_w) if decided else None
    prior = PRIOR_REFUSE + PRIOR_ACCEPT
    margin = Z95 * math.sqrt(p * (1 - p) / (weight + prior + 1)) if p is not None else None
    last = None
    if row.last:
        reason = row.last.get("reason") or ""
        last = {
            "decision": row.last.get("decision", ""),
            "reason": reason,
            "reason_label": (
                neutral(RefusalReason(reason).label) if reason in RefusalReason.values else ""
            ),
            "note": row.last.get("note", ""),
            "by": row.last.get("by", ""),
            "at": row.last.get("at"),
            "call": row.last.get("call"),
        }
    return {
        "decided": decided,
        "refused": row.people_refused,
        "accepted": row.people_accepted,
        "operators": len(row.operators or {}),
        "last": last,
        "probability": p,
        "weight": round(weight, 3),
        "sureness": round(weight / (weight + prior), 3),
        "margin": round(margin, 3) if margin is not None else None,
        "auto_decided": row.auto_accepted + row.auto_refused,
        "auto_refused": row.auto_refused,
    }


def suggestion(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """The decision people would most likely make, shown on the card and never applied: when
    people decided the number at least ``SUGGEST_MIN_DECISIONS`` times and the probability of
    refusal is at least ``SUGGEST_THRESHOLD`` (refuse) or at most 1 - threshold (accept)."""
    if not summary or summary.get("probability") is None:
        return None
    if summary["decided"] < settings.SUGGEST_MIN_DECISIONS:
        return None
    p = summary["probability"]
    threshold = settings.SUGGEST_THRESHOLD
    if p >= threshold:
        return {"decision": Decision.REFUSE.value, "probability": p}
    if 1 - p >= threshold:  # (not p <= 1 - threshold: 1 - 0.8 is 0.19999999999999996)
        return {"decision": Decision.ACCEPT.value, "probability": p}
    return None
