"""Screening rules: number normalisation and matching with a defined precedence.

Numbers are compared in international form without ``+``: ``+44 20 7946 0123``,
``0044 20 7946 0123`` and ``020 7946 0123`` (on a trunk with country code 44) all become
``442079460123``. A withheld or non-numeric caller never matches.

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
import re
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import connection
from django.db.models import F
from django.utils import timezone

from screening import sql
from screening.models import Decision, Rule, RuleMatch

if TYPE_CHECKING:
    from screening.models import Trunk

# For rules that apply to all trunks (and trunk-less contexts): the Trunk model's defaults.
DEFAULT_COUNTRY_CODE = "44"
DEFAULT_NATIONAL_PREFIX = "0"
DEFAULT_INTERNATIONAL_PREFIX = "00"

# Separators people and PBXs put inside numbers; anything else (letters, "@", ";") means
# "not a plain number" (anonymous, a SIP URI) and never matches.
_SEPARATORS = re.compile(r"[\s\-./()]")
_NUMBER = re.compile(r"\+?\d+")


def normalise(
    number: str,
    country_code: str = DEFAULT_COUNTRY_CODE,
    national_prefix: str = DEFAULT_NATIONAL_PREFIX,
    international_prefix: str = DEFAULT_INTERNATIONAL_PREFIX,
) -> str:
    """``number`` in international form without ``+``, or ``""`` when it is not a number."""
    compact = _SEPARATORS.sub("", number or "")
    if not _NUMBER.fullmatch(compact):
        return ""
    if compact.startswith("+"):
        return compact[1:]
    if international_prefix and compact.startswith(international_prefix):
        return compact[len(international_prefix) :]
    if national_prefix and compact.startswith(national_prefix):
        return country_code + compact[len(national_prefix) :]
    # No prefix at all: a short code or a number the PBX already sent without one; taken as is.
    return compact


def normalise_for_trunk(number: str, trunk: Trunk | None) -> str:
    if trunk is None:
        return normalise(number)
    return normalise(number, trunk.country_code, trunk.national_prefix, trunk.international_prefix)


def normalise_pattern(pattern: str, trunk: Trunk | None) -> str:
    """A rule's pattern, read with its trunk's prefixes (the defaults for an all-trunks rule)."""
    return normalise_for_trunk(pattern, trunk)


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
