"""The follow-up after a decision: "Refuse and block" and "Accept and always allow".

From a decided call's entry on the dashboard an operator turns the call into a screening rule for
its number: an exact rule, refuse or accept, for 1 day, 7 days or for good. So that the next call
from that number is decided before anyone sees it (``screening.calls.rules``).

Who may: anyone who may decide calls on the call's trunk, not only the operator who decided it:
the call sits in every such operator's "Recent outcomes", and an expired call (nobody decided
in time) needs a follow-up as much as a decided one. The call must be over (not waiting or being
decided).

Where the rule applies: the call's trunk only. An operator's say is over the calls they may
screen, so a rule made from a card never decides calls on a trunk its maker cannot see; an admin
can widen it to all trunks in the admin.

A second identical follow-up while the first rule is still in force creates nothing new: it
extends that rule (the later expiry wins; permanent beats any date). An opposite rule made from
a card is switched off ("always allow" after a mistaken block); one made in the admin is left
alone and the follow-up refused with its name, for an admin to settle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from screening.calls import store
from screening.calls.access import may_decide
from screening.calls.memory import ActionError, choice, is_open, number_of, reason_field
from screening.calls.payload import epoch_ms, user_name
from screening.models import AuditKind, Call, Decision, Rule, RuleMatch

ACTIONS = {"block": "Refuse and block", "allow": "Accept and always allow"}
DURATIONS: dict[str, timedelta | None] = {
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "permanent": None,
}
DURATION_LABELS = {"1d": "for 1 day", "7d": "for 7 days", "permanent": "permanently"}


@dataclass(frozen=True)
class FollowUp:
    rule: Rule
    created: bool  # False: an identical rule in force was extended instead
    disabled: list[int]  # opposite card-made rules switched off


def follow_up(
    call_pk: int, user: AbstractBaseUser, data: dict[str, Any], *, now: datetime | None = None
) -> FollowUp:
    """Create (or extend) the rule ``data`` asks for from call ``call_pk``. Raises
    ``Call.DoesNotExist`` and ``ActionError``."""
    action = choice(data, "action", ACTIONS)
    if not action:
        raise ActionError(400, _("Say which follow-up: action block or allow."))
    duration = choice(data, "duration", DURATION_LABELS)
    if not duration:
        raise ActionError(400, _("Say for how long: duration 1d, 7d or permanent."))
    reason = reason_field(data)
    if reason and action != "block":
        raise ActionError(400, _("Only a block has a reason."))
    now = now or timezone.now()
    call = store.load(call_pk)
    if not may_decide(user, call.trunk):
        raise ActionError(403, _("You may not decide calls on this call's trunk."))
    if is_open(call):
        raise ActionError(409, _("Decide the call first: the follow-up comes after the decision."))
    number = number_of(call)
    decision = Decision.REFUSE if action == "block" else Decision.ACCEPT
    if decision == Decision.REFUSE and not reason:
        reason = call.reason  # the refusal's own reason, when it had one
    span = DURATIONS[duration]
    expires_at = now + span if span is not None else None
    with transaction.atomic():
        # Two presses on the same call (two operators, a double click) take turns here
        # (PostgreSQL row lock; SQLite's write lock serialises the whole transaction).
        list(Call.objects.select_for_update().filter(pk=call.pk).values_list("pk"))
        in_force = _rules_in_force(number, call, now)
        opposite = [r for r in in_force if r.action != decision]
        by_admin = [r for r in opposite if r.source_call_id is None]
        if by_admin:
            raise ActionError(
                409,
                _("%(rule)s was set in the admin; ask an admin to change it.")
                % {"rule": by_admin[0].describe()},
            )
        disabled = [r.pk for r in opposite]
        same = next((r for r in in_force if r.action == decision), None)
        if same is not None:
            rule, created = _extended(same, expires_at, reason), False
        else:
            rule = Rule.objects.create(
                pattern=f"+{number}",
                match=RuleMatch.EXACT,
                trunk=call.trunk,
                action=decision,
                expires_at=expires_at,
                note=f"{ACTIONS[action]}, from call #{call.pk} by {user_name(user)}"[:256],
                created_by=user,
                created_at=now,
                source_call=call,
                reason=reason if decision == Decision.REFUSE else "",
            )
            created = True
        verb = "created" if created else "extended"
        off = f"; switched off rule {', '.join(f'#{pk}' for pk in disabled)}" if disabled else ""
        store.audit(
            call,
            AuditKind.RULE_CREATED,
            f"{user_name(user)}: {ACTIONS[action].lower()} {DURATION_LABELS[duration]} "
            f"({verb} rule #{rule.pk}){off}",
            actor=user,
            at=now,
            rule_id=rule.pk,
            rule_name=rule.describe(),
            action=decision,
            duration=duration,
            expires_at=rule.expires_at.isoformat() if rule.expires_at else None,
            reason=rule.reason,
            extended=not created,
            disabled=disabled,
        )
        # Existing rules change only after the audit row: intake counts a rule's hit after its
        # own audit rows, which hold the audit chain's head to commit, so changing a rule before
        # taking the head here could deadlock with it (lock order: screening.calls.chain).
        if disabled:
            Rule.objects.filter(pk__in=disabled).update(enabled=False)
        if not created:
            Rule.objects.filter(pk=rule.pk).update(expires_at=rule.expires_at, reason=rule.reason)
    return FollowUp(rule, created, disabled)


def _rules_in_force(number: str, call: Call, now: datetime) -> list[Rule]:
    """Enabled, unexpired exact rules for this number on the call's trunk."""
    return list(
        Rule.objects.filter(
            normalised=number, match=RuleMatch.EXACT, trunk=call.trunk, enabled=True
        )
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .select_related("trunk")
        .order_by("id")
    )


def _extended(rule: Rule, expires_at: datetime | None, reason: str) -> Rule:
    """``rule`` extended, not yet saved: the later expiry wins; permanent (None) beats any date.
    A new reason replaces the old."""
    if rule.expires_at is not None and (expires_at is None or expires_at > rule.expires_at):
        rule.expires_at = expires_at
    if reason and rule.action == Decision.REFUSE:
        rule.reason = reason
    return rule


def rule_payload(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.pk,
        "action": rule.action,
        "pattern": rule.pattern,
        "trunk": rule.trunk.name if rule.trunk_id and rule.trunk else "",
        "expires_at": epoch_ms(rule.expires_at),
        "reason": rule.reason,
        "describe": rule.describe(),
    }
