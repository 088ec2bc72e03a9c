"""The supervisors' review queue (``/review/``): what the team's decisions suggest a supervisor
looks at, and what the supervisor did about it (``ReviewAction``, one row per approval or
dismissal, never changed).

Three lists, each computed from the call and rule tables when the page is shown:

- **block suggestions**: numbers people refused at least ``REVIEW_MIN_REFUSALS`` (K) times, by at
  least two operators, in the last ``REVIEW_WINDOW_DAYS`` (D) days, that no active refuse rule
  covers. Approve creates an exact refuse rule; dismiss hides the number for D days.
- **possible wrong refusals**: people's refusals of the last D days whose number is in the
  contacts, or was accepted by another operator in those days, or called back
  ``REVIEW_CALLBACK_COUNT`` (N) times or more within the hour after. Either answer takes the
  call off the list for good (it is recorded with who and when).
- **rules to review**: enabled rules without expiry that have not matched in 90 days, and rules
  made from a call's card. Approve disables the rule; dismiss keeps it and hides it for 90 days
  (a rule made from the card, once looked at, is not listed for that reason again).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Count, Exists, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from screening.calls import pseudonyms, store
from screening.calls.payload import user_name
from screening.models import (
    AuditKind,
    Call,
    CallStatus,
    ContactNumber,
    DecidedBy,
    Decision,
    RefusalReason,
    ReviewAction,
    ReviewKind,
    Rule,
    RuleMatch,
)

RULE_IDLE = timedelta(days=90)
CALLBACK_WINDOW = timedelta(hours=1)
LIST_LIMIT = 50  # per list: the oldest problems wait for the next visit, not a longer page
EVIDENCE_LIMIT = 20  # calls shown under one block suggestion
HISTORY_LIMIT = 50


def window() -> timedelta:
    return timedelta(days=settings.REVIEW_WINDOW_DAYS)


# --- The lists ------------------------------------------------------------------------------


@dataclass
class Evidence:
    call_id: int
    at: datetime
    by: str
    reason: str
    reason_label: str
    note: str


@dataclass
class BlockSuggestion:
    number: str  # normalised
    refusals: int
    operators: list[str]
    reasons: list[tuple[str, int]]  # (label, count), most frequent first
    calls: list[Evidence] = field(default_factory=list)


@dataclass
class WrongRefusal:
    call_id: int
    number: str
    caller: str
    at: datetime
    by: str
    reason_label: str
    why: list[str]


@dataclass
class RuleToReview:
    rule: Rule
    why: list[str]


def _people_refusals(since: datetime) -> QuerySet[Call]:
    return Call.objects.filter(
        received_at__gte=since,
        status=CallStatus.REFUSED,
        decided_by_kind=DecidedBy.OPERATOR,
        # Not a pseudonym (retention shorter than the window): there is no number left to block.
    ).exclude(Q(caller_key="") | Q(caller_key__startswith=pseudonyms.PREFIX))


def _hidden(kind: str, now: datetime, subjects: list[str]) -> set[str]:
    """Subjects a supervisor dismissed until after ``now``."""
    return set(
        ReviewAction.objects.filter(
            kind=kind, subject__in=subjects, hidden_until__gt=now
        ).values_list("subject", flat=True)
    )


def covered_by_refuse_rule(number: str, now: datetime) -> bool:
    """Whether an enabled, unexpired refuse rule (any trunk) matches the normalised number."""
    prefixes = [number[:i] for i in range(1, len(number) + 1)]
    rules = Rule.objects.filter(enabled=True, action=Decision.REFUSE, normalised__in=prefixes)
    rules = rules.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    return rules.filter(Q(match=RuleMatch.PREFIX) | Q(normalised=number)).exists()


def block_suggestions(now: datetime) -> list[BlockSuggestion]:
    refusals = _people_refusals(now - window())
    counted = (
        refusals.values("caller_key")
        .annotate(n=Count("pk"), ops=Count("decided_by", distinct=True))
        .filter(n__gte=settings.REVIEW_MIN_REFUSALS, ops__gte=2)
        .order_by("-n", "caller_key")
    )
    rows = list(counted[: LIST_LIMIT * 2])
    hidden = _hidden(ReviewKind.BLOCK, now, [r["caller_key"] for r in rows])
    numbers = [
        r["caller_key"]
        for r in rows
        if r["caller_key"] not in hidden and not covered_by_refuse_rule(r["caller_key"], now)
    ][:LIST_LIMIT]
    if not numbers:
        return []
    found: dict[str, BlockSuggestion] = {}
    reasons: dict[str, Counter[str]] = {}
    calls = (
        refusals.filter(caller_key__in=numbers)
        .select_related("decided_by")
        .order_by("caller_key", "-received_at")
    )
    for call in calls:
        item = found.setdefault(call.caller_key, BlockSuggestion(call.caller_key, 0, [], []))
        item.refusals += 1
        who = user_name(call.decided_by)
        if who not in item.operators:
            item.operators.append(who)
        label = call.get_reason_display() if call.reason else _("no reason given")
        reasons.setdefault(call.caller_key, Counter())[label] += 1
        if len(item.calls) < EVIDENCE_LIMIT:
            item.calls.append(
                Evidence(call.pk, call.received_at, who, call.reason, label, call.reason_note)
            )
    for number, item in found.items():
        item.reasons = reasons[number].most_common()
    return sorted(found.values(), key=lambda s: (-s.refusals, s.number))


def wrong_refusals(now: datetime) -> list[WrongRefusal]:
    since = now - window()
    refusals = _people_refusals(since)
    accepted_elsewhere = Call.objects.filter(
        caller_key=OuterRef("caller_key"),
        received_at__gte=since,
        status=CallStatus.ACCEPTED,
        decided_by_kind=DecidedBy.OPERATOR,
    ).exclude(decided_by=OuterRef("decided_by"))
    callbacks = (
        Call.objects.filter(
            caller_key=OuterRef("caller_key"),
            received_at__gt=OuterRef("received_at"),
            received_at__lte=OuterRef("received_at") + CALLBACK_WINDOW,
        )
        .order_by()
        .values("caller_key")
        .annotate(n=Count("pk"))
        .values("n")
    )
    candidates = (
        refusals.annotate(
            in_contacts=Exists(ContactNumber.objects.filter(normalised=OuterRef("caller_key"))),
            accepted_elsewhere=Exists(accepted_elsewhere),
            callbacks=Coalesce(Subquery(callbacks, output_field=IntegerField()), 0),
        )
        .filter(
            Q(in_contacts=True)
            | Q(accepted_elsewhere=True)
            | Q(callbacks__gte=settings.REVIEW_CALLBACK_COUNT)
        )
        .select_related("decided_by")
        .order_by("-received_at")
    )
    # Answered ones are dropped after the query (ReviewAction.subject is text), so the query
    # takes twice the list's length.
    found = list(candidates[: LIST_LIMIT * 2])
    done = set(
        ReviewAction.objects.filter(
            kind=ReviewKind.WRONG_REFUSAL, subject__in=[str(c.pk) for c in found]
        ).values_list("subject", flat=True)
    )
    items = []
    for call in found:
        if str(call.pk) in done:
            continue
        why = []
        if call.in_contacts:
            why.append(_("the number is in the contacts"))
        if call.accepted_elsewhere:
            why.append(_("another operator accepted this number"))
        if call.callbacks >= settings.REVIEW_CALLBACK_COUNT:
            why.append(_("called back %(count)s times within the hour") % {"count": call.callbacks})
        items.append(
            WrongRefusal(
                call.pk,
                call.caller_key,
                call.caller,
                call.received_at,
                user_name(call.decided_by),
                call.get_reason_display() if call.reason else "",
                why,
            )
        )
    return items[:LIST_LIMIT]


def rules_to_review(now: datetime) -> list[RuleToReview]:
    idle_since = now - RULE_IDLE
    idle = Q(expires_at__isnull=True) & (
        Q(last_hit_at__lt=idle_since) | Q(last_hit_at__isnull=True, created_at__lt=idle_since)
    )
    rules = list(
        Rule.objects.filter(enabled=True)
        .filter(idle | Q(source_call__isnull=False))
        .select_related("trunk", "created_by")
        .order_by("created_at", "pk")[: LIST_LIMIT * 2]
    )
    subjects = [str(r.pk) for r in rules]
    hidden = _hidden(ReviewKind.RULE, now, subjects)
    seen = set(
        ReviewAction.objects.filter(kind=ReviewKind.RULE, subject__in=subjects).values_list(
            "subject", flat=True
        )
    )
    items = []
    for rule in rules:
        if str(rule.pk) in hidden:
            continue
        why = []
        idle_rule = rule.expires_at is None and ((rule.last_hit_at or rule.created_at) < idle_since)
        if idle_rule:
            why.append(
                _("no match in 90 days") if rule.last_hit_at else _("never matched in 90 days")
            )
        if rule.source_call_id and str(rule.pk) not in seen:
            why.append(_("made from a call's card"))
        if why:
            items.append(RuleToReview(rule, why))
    return items[:LIST_LIMIT]


def history() -> list[ReviewAction]:
    """The latest approvals and dismissals, each with its one-line ``summary``."""
    rows = list(ReviewAction.objects.select_related("by")[:HISTORY_LIMIT])
    for row in rows:
        row.summary = describe(row)  # type: ignore[attr-defined]
    return rows


# --- Acting on them ---------------------------------------------------------------------------


class ReviewForm(forms.Form):
    """One approval or dismissal (POST /review/)."""

    kind = forms.ChoiceField(choices=ReviewKind.choices)
    action = forms.ChoiceField(choices=[("approve", "approve"), ("dismiss", "dismiss")])
    subject = forms.CharField(max_length=64)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        getlist = getattr(self.data, "getlist", None)
        for name in self.fields:
            if getlist is not None and len(getlist(name)) > 1:
                self.add_error(name, _("Give this field once."))
        kind, subject = data.get("kind"), data.get("subject")
        if kind is None or subject is None:
            return data
        if kind == ReviewKind.BLOCK and not (subject.isascii() and subject.isdigit()):
            self.add_error("subject", _("A block suggestion's subject is a normalised number."))
        if kind != ReviewKind.BLOCK and not (
            subject.isascii() and subject.isdigit() and 0 < int(subject) < 2**63
        ):
            self.add_error("subject", _("This subject is an id."))
        return data


def describe(action: ReviewAction) -> str:
    """One line for the page's message and history."""
    subject = {"subject": action.subject}
    approved = action.approved
    if action.kind == ReviewKind.BLOCK:
        if approved and action.rule_id:
            return _("Approved block suggestion for %(subject)s: refuse rule %(rule)s created") % {
                **subject,
                "rule": action.rule_id,
            }
        if approved:
            return _("Approved block suggestion for %(subject)s") % subject
        if action.hidden_until:
            until = f"{timezone.localtime(action.hidden_until):%Y-%m-%d %H:%M}"
            return _(
                "Dismissed block suggestion for %(subject)s: not suggested again until %(until)s"
            ) % {**subject, "until": until}
        return _("Dismissed block suggestion for %(subject)s") % subject
    if action.kind == ReviewKind.WRONG_REFUSAL:
        if approved:
            return (
                _("Approved possible wrong refusal (call %(subject)s): confirmed wrong") % subject
            )
        return (
            _("Dismissed possible wrong refusal (call %(subject)s): the refusal was right")
            % subject
        )
    if action.kind == ReviewKind.RULE:
        if approved:
            return _("Approved review of rule %(subject)s: rule disabled") % subject
        return _("Dismissed review of rule %(subject)s: rule kept") % subject
    return action.subject


class NotInQueue(Exception):
    """The item is no longer in the queue (someone else acted, or it no longer qualifies)."""


def act(data: dict[str, Any], user: AbstractBaseUser, now: datetime) -> ReviewAction:
    """Carry out a validated ``ReviewForm``; raises ``NotInQueue``."""
    kind, approve, subject = data["kind"], data["action"] == "approve", data["subject"]
    with transaction.atomic():
        if kind == ReviewKind.BLOCK:
            return _act_block(subject, approve, user, now)
        if kind == ReviewKind.WRONG_REFUSAL:
            return _act_wrong_refusal(int(subject), approve, user, now)
        return _act_rule(int(subject), approve, user, now)


def _act_block(number: str, approve: bool, user: AbstractBaseUser, now: datetime) -> ReviewAction:
    item = next((s for s in block_suggestions(now) if s.number == number), None)
    if item is None:
        raise NotInQueue(
            _("%(number)s is not suggested for blocking any more.") % {"number": number}
        )
    detail = {
        "refusals": item.refusals,
        "operators": item.operators,
        "reasons": dict(item.reasons),
        "calls": [e.call_id for e in item.calls],
    }
    if not approve:
        return ReviewAction.objects.create(
            kind=ReviewKind.BLOCK,
            subject=number,
            approved=False,
            by=user,
            at=now,
            hidden_until=now + window(),
            detail=detail,
        )
    top_reason = next((e.reason for e in item.calls if e.reason in RefusalReason.values), "")
    rule = Rule(
        pattern=f"+{number}",
        match=RuleMatch.EXACT,
        action=Decision.REFUSE,
        note=(
            f"From the review queue: refused {item.refusals} times by "
            f"{len(item.operators)} operators in {settings.REVIEW_WINDOW_DAYS} days"
        )[:256],
        created_by=user,
        created_at=now,
        reason=top_reason,
    )
    rule.save()
    latest = Call.objects.get(pk=item.calls[0].call_id)
    store.audit(
        latest,
        AuditKind.RULE_CREATED,
        f"{user_name(user)} blocked {number} from the review queue (rule {rule.pk})",
        actor=user,
        at=now,
        rule_id=rule.pk,
        source="review",
    )
    return ReviewAction.objects.create(
        kind=ReviewKind.BLOCK,
        subject=number,
        approved=True,
        by=user,
        at=now,
        rule=rule,
        detail=detail,
    )


def _act_wrong_refusal(
    call_id: int, approve: bool, user: AbstractBaseUser, now: datetime
) -> ReviewAction:
    item = next((w for w in wrong_refusals(now) if w.call_id == call_id), None)
    if item is None:
        raise NotInQueue(
            _("Call %(id)s is not in the list of possible wrong refusals.") % {"id": call_id}
        )
    return ReviewAction.objects.create(
        kind=ReviewKind.WRONG_REFUSAL,
        subject=str(call_id),
        approved=approve,
        by=user,
        at=now,
        detail={"number": item.number, "operator": item.by, "why": item.why},
    )


def _act_rule(rule_id: int, approve: bool, user: AbstractBaseUser, now: datetime) -> ReviewAction:
    item = next((r for r in rules_to_review(now) if r.rule.pk == rule_id), None)
    if item is None:
        raise NotInQueue(_("Rule %(id)s is not waiting for a review.") % {"id": rule_id})
    rule = Rule.objects.select_for_update().get(pk=rule_id)
    if approve:
        rule.enabled = False
        rule.save(update_fields=["enabled"])
    return ReviewAction.objects.create(
        kind=ReviewKind.RULE,
        subject=str(rule_id),
        approved=approve,
        by=user,
        at=now,
        hidden_until=None if approve else now + RULE_IDLE,
        rule=rule,
        detail={"rule": str(rule), "why": item.why, "disabled": approve},
    )
