"""Permanent refuse rules copied into the PBX's own block list (an admin action on Rules).

All of them go into ONE list named for the product (``LIST_NAME``): found by name in
``block_numbers/list``, created if missing, otherwise updated with its numbers merged with ours
(numbers an admin put there by hand are kept). Only rules that block one number for good qualify:
enabled, refuse, exact match, no expiry.

Unconfirmed on the real PBX: whether its block list acts before the screening event (30016) is
sent, so whether a blocked caller still reaches the dashboard; the list's exact size limit (the
admin guide says 100 to 200 numbers; the PBX's own error is shown when it refuses); and which
number format it matches, so each number is sent as the rule's pattern without separators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from screening.models import Decision, Rule, RuleMatch
from screening.pbx.client import PbxClient, PbxTransportError

LIST_NAME = "pbxscreen"
LIMIT_TYPE = "inbound"  # our rules screen inbound calls; a list already set to "both" stays so
_SEPARATORS = re.compile(r"[\s\-./()]")


@dataclass
class PushResult:
    pushed: list[Rule] = field(default_factory=list)
    skipped: list[tuple[Rule, str]] = field(default_factory=list)
    created: bool = False
    list_size: int = 0


def why_not(rule: Rule) -> str:
    """Why this rule cannot go into the PBX's block list, or "" when it can."""
    if rule.action != Decision.REFUSE:
        return "not a refuse rule"
    if rule.match != RuleMatch.EXACT:
        return "a prefix, not one number"
    if not rule.enabled:
        return "disabled"
    if rule.expires_at is not None:
        return "not permanent (it expires)"
    if not pbx_number(rule):
        return "no number in its pattern"
    return ""


def pbx_number(rule: Rule) -> str:
    compact = _SEPARATORS.sub("", rule.pattern)
    return compact if re.fullmatch(r"\+?\d{1,32}", compact) else ""


def push_permanent_blocks(client: PbxClient, rules: QuerySet[Rule]) -> PushResult:
    """Write the qualifying ``rules`` into the product's block list; marks them pushed."""
    result = PushResult()
    for rule in rules.order_by("pk"):
        reason = why_not(rule)
        if reason:
            result.skipped.append((rule, reason))
        else:
            result.pushed.append(rule)
    if not result.pushed:
        return result
    ours = _find(client.block_lists())
    numbers = _numbers(ours.get("number_list")) if ours else []
    for rule in result.pushed:
        number = pbx_number(rule)
        if number not in numbers:
            numbers.append(number)
    if ours is None:
        client.create_block_list(LIST_NAME, LIMIT_TYPE, numbers)
        result.created = True
    else:
        list_id = ours.get("id")
        if not isinstance(list_id, int) or isinstance(list_id, bool):
            raise PbxTransportError("block_numbers/list", f"list {LIST_NAME!r} has no usable id")
        limit = "both" if ours.get("limit_type") == "both" else LIMIT_TYPE
        client.update_block_list(list_id, LIST_NAME, limit, numbers)
    result.list_size = len(numbers)
    Rule.objects.filter(pk__in=[rule.pk for rule in result.pushed]).update(
        pbx_blocked_at=timezone.now()
    )
    return result


def _find(lists: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((item for item in lists if item.get("name") == LIST_NAME), None)


def _numbers(raw: Any) -> list[str]:
    if not isinstance(raw, str):
        return []
    numbers: list[str] = []
    for number in raw.split("&"):
        number = number.strip()
        if number and number not in numbers:
            numbers.append(number)
    return numbers
