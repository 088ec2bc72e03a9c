"""Screening rules: which rule decides a call, with a defined precedence.

Numbers are compared as ``screening.calls.numbers`` normalises them; a withheld or non-numeric
caller never matches.

Precedence when several rules match (the first difference decides):

1. an exact rule beats a prefix rule;
2. a longer prefix beats a shorter one;
3. a rule for the call's trunk beats a rule for all trunks;
4. refuse beats accept;
5. the older rule (lower id) wins, so the outcome never depends on the database's row order.

Expired and disabled rules are ignored.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models import F
from django.utils import timezone

from screening.calls import sql
from screening.calls.numbers import normalise_for_trunk
from screening.models import Decision, Rule, RuleMatch

if TYPE_CHECKING:
    from screening.models import Trunk


def precedence_key(rule: Rule) -> tuple[int, int, int, int, int]:
    """Sort key: the smallest key is the rule that decides (see the module docstring)."""
    return (
        0 if rule.match == RuleMatch.EXACT else 1,
        -len(rule.normalised),
        0 if rule.trunk_id is not None else 1,
        0 if rule.action == Decision.REFUSE else 1,
        rule.pk or 0,
    )


def find_rule(caller: str, trunk: Trunk, now: datetime | None = None) -> Rule | None:
    """The rule that decides a call from ``caller`` on ``trunk``, or None."""
    number = normalise_for_trunk(caller, trunk)
    if not number:
        return None
    now = now or timezone.now()
    # The number and every prefix of it, in one indexed IN lookup. This runs for every incoming
    # call before its push and nearly always finds nothing, so the lookup is one plain statement
    # (see screening/sql.py); only matching rules are loaded as objects.
    candidates = [number[:i] for i in range(1, len(number) + 1)]
    rows = sql.fetch(
        _candidates_sql(connection.vendor, len(candidates)),
        [True, *candidates, trunk.pk, sql.param(now)],
    )
    ids = [
        pk for pk, match, normalised in rows if match == RuleMatch.PREFIX or normalised == number
    ]
    if not ids:
        return None
    return min(Rule.objects.select_related("trunk").filter(pk__in=ids), key=precedence_key)


@functools.cache
def _candidates_sql(vendor: str, count: int) -> str:
    """Enabled, unexpired rules for this trunk or all trunks whose number is one of ``count``
    candidates (identifiers only: every value is a parameter)."""
    col = {f: sql.column(Rule, f) for f in ("id", "match", "normalised", "enabled", "trunk")}
    expires = sql.column(Rule, "expires_at")
    return (
        f"SELECT {col['id']}, {col['match']}, {col['normalised']} FROM {sql.table(Rule)}"  # noqa: S608
        f" WHERE {col['enabled']} = %s AND {col['normalised']} IN ({', '.join(['%s'] * count)})"
        f" AND ({col['trunk']} IS NULL OR {col['trunk']} = %s)"
        f" AND ({expires} IS NULL OR {expires} > %s)"
    )


def record_hit(rule: Rule, at: datetime) -> None:
    """Count a hit atomically: concurrent calls on the same rule must not lose increments."""
    Rule.objects.filter(pk=rule.pk).update(hit_count=F("hit_count") + 1, last_hit_at=at)
