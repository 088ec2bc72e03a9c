"""The review queue (/review/): each list exactly at its thresholds, what approving and
dismissing do, their history, and hostile requests; and the statistics' agreement with the shadow
suggestion."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import count

import pytest
from django.test import Client, override_settings
from django.utils import timezone

from screening.calls import rules
from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallStatus,
    Contact,
    ContactNumber,
    DecidedBy,
    ReviewAction,
    Rule,
    Trunk,
)
from screening.reports import review, stats
from tests.support.live import make_user

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("review_settings"),
]

NOW = timezone.now().replace(microsecond=0)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_ids = count(1)


@pytest.fixture
def review_settings() -> object:
    with override_settings(REVIEW_MIN_REFUSALS=3, REVIEW_WINDOW_DAYS=7, REVIEW_CALLBACK_COUNT=3):
        yield


@pytest.fixture
def trunk() -> Trunk:
    return Trunk.objects.create(name="peer-main", label="Main line")


@pytest.fixture
def ops() -> list:
    return [make_user(name) for name in ("alice", "bob", "carol")]


def decided(
    trunk: Trunk,
    number: str,
    at: datetime,
    user: object = None,
    decision: str = "refuse",
    *,
    kind: str = DecidedBy.OPERATOR,
    **extra: object,
) -> Call:
    n = next(_ids)
    status = {"refuse": CallStatus.REFUSED, "accept": CallStatus.ACCEPTED}.get(
        decision, CallStatus.PENDING
    )
    return Call.objects.create(
        pbx_call_id=f"1700000000.{n}",
        channel_id=f"PJSIP/review-{n}",
        caller=f"+{number}",
        called="+442079461000",
        trunk=trunk,
        received_at=at,
        deadline=at + timedelta(seconds=10),
        status=status,
        decision=decision if status != CallStatus.PENDING else "",
        decided_by_kind=kind if status != CallStatus.PENDING else "",
        decided_by=user,
        finished_at=at + timedelta(seconds=2) if status != CallStatus.PENDING else None,
        caller_key=number,
        **extra,
    )


def numbers(now: datetime = NOW) -> list[str]:
    return [s.number for s in review.block_suggestions(now)]


def test_block_suggestions_appear_exactly_at_k_refusals_by_two_operators_in_d_days(
    trunk: Trunk, ops: list
) -> None:
    alice, bob, _ = ops
    # K refusals by 2 operators, the oldest exactly D days ago: suggested.
    for at, user in ((NOW - 7 * DAY, alice), (NOW - DAY, bob), (NOW - HOUR, alice)):
        decided(trunk, "447700900001", at, user, reason="spam")
    # K - 1 refusals by 2 operators: not yet.
    for user in (alice, bob):
        decided(trunk, "447700900002", NOW - HOUR, user)
    # K refusals by one operator: one person's habit, not the team's view.
    for _ in range(3):
        decided(trunk, "447700900003", NOW - HOUR, alice)
    # K refusals, but one of them a second more than D days ago.
    decided(trunk, "447700900004", NOW - 7 * DAY - timedelta(seconds=1), alice)
    for user in (alice, bob):
        decided(trunk, "447700900004", NOW - HOUR, user)
    # K refusals by rules (not people), and K by people plus acceptances that do not count.
    for _ in range(3):
        decided(trunk, "447700900005", NOW - HOUR, kind=DecidedBy.RULE)
    for user in (alice, bob):
        decided(trunk, "447700900006", NOW - HOUR, user)
        decided(trunk, "447700900006", NOW - HOUR, user, "accept")

    found = review.block_suggestions(NOW)
    assert [s.number for s in found] == ["447700900001"]
    item = found[0]
    assert item.refusals == 3
    assert sorted(item.operators) == ["alice", "bob"]
    assert item.reasons == [("Spam or sales", 3)]
    assert len(item.calls) == 3

    # An active refuse rule covering the number (here a prefix) takes it off the list ...
    rule = Rule.objects.create(pattern="+4477009000", match="prefix", action="refuse")
    assert numbers() == []
    # ... a disabled or expired one does not.
    Rule.objects.filter(pk=rule.pk).update(enabled=False)
    assert numbers() == ["447700900001"]
    Rule.objects.filter(pk=rule.pk).update(enabled=True, expires_at=NOW - HOUR)
    assert numbers() == ["447700900001"]
    Rule.objects.filter(pk=rule.pk).update(action="accept", expires_at=None)
    assert numbers() == ["447700900001"]


@pytest.fixture
def supervisor() -> Client:
    client = Client()
    client.force_login(make_user("sam", group="Supervisors", first_name="Sam"))
    return client


def suggest(trunk: Trunk, ops: list, number: str, at: datetime) -> None:
    for user in (ops[0], ops[1], ops[0]):
        decided(trunk, number, at, user, reason="abusive")


def test_approving_a_block_suggestion_creates_a_refuse_rule(
    trunk: Trunk, ops: list, supervisor: Client
) -> None:
    suggest(trunk, ops, "447700900001", timezone.now() - HOUR)
    page = supervisor.get("/review/")
    assert page.status_code == 200
    assert "+447700900001" in page.content.decode()

    answer = supervisor.post(
        "/review/", {"kind": "block", "subject": "447700900001", "action": "approve"}
    )
    assert answer.status_code == 302
    assert answer["Location"] == "/review/"
    rule = Rule.objects.get()
    assert (rule.normalised, rule.match, rule.action) == ("447700900001", "exact", "refuse")
    assert rule.created_by.username == "sam"
    assert "review queue" in rule.note
    assert rule.reason == "abusive"
    # The next call from the number is decided by the rule.
    assert rules.find_rule("07700 900001", trunk) == rule
    action = ReviewAction.objects.get()
    assert (action.kind, action.subject, action.approved, action.rule) == (
        "block",
        "447700900001",
        True,
        rule,
    )
    assert action.by.username == "sam"
    assert AuditEvent.objects.filter(kind=AuditKind.RULE_CREATED).count() == 1

    page = supervisor.get("/review/").content.decode()
    assert "Approved block suggestion for 447700900001: refuse rule" in page  # the message
    assert 'id="review-history"' in page
    assert review.block_suggestions(timezone.now()) == []
    # Approving again (another supervisor's stale page): nothing more is created.
    again = supervisor.post(
        "/review/", {"kind": "block", "subject": "447700900001", "action": "approve"}
    )
    assert again.status_code == 302
    assert Rule.objects.count() == 1
    assert "not suggested for blocking any more" in supervisor.get("/review/").content.decode()


def test_dismissing_a_block_suggestion_hides_it_for_d_days(
    trunk: Trunk, ops: list, supervisor: Client
) -> None:
    now = timezone.now()
    suggest(trunk, ops, "447700900001", now - HOUR)
    answer = supervisor.post(
        "/review/", {"kind": "block", "subject": "447700900001", "action": "dismiss"}
    )
    assert answer.status_code == 302
    action = ReviewAction.objects.get()
    assert not action.approved
    assert action.hidden_until == pytest.approx(now + 7 * DAY, abs=timedelta(seconds=30))
    assert not Rule.objects.exists()
    assert numbers(timezone.now()) == []
    # New refusals inside the hidden time change nothing; once it has passed, it is back.
    until = action.hidden_until
    suggest(trunk, ops, "447700900001", until - 2 * HOUR)
    assert numbers(until - timedelta(minutes=1)) == []
    assert numbers(until + timedelta(minutes=1)) == ["447700900001"]


def test_possible_wrong_refusals(trunk: Trunk, ops: list, supervisor: Client) -> None:
    alice, bob, _ = ops
    now = timezone.now()
    contact = Contact.objects.create(name="Supplier Ltd")
    ContactNumber.objects.create(contact=contact, number="+44 7700 900001")
    in_contacts = decided(trunk, "447700900001", now - DAY, alice)
    accepted_elsewhere = decided(trunk, "447700900002", now - DAY, alice)
    decided(trunk, "447700900002", now - 2 * DAY, bob, "accept")
    # Accepted by the same operator: not "someone else".
    decided(trunk, "447700900003", now - DAY, alice)
    decided(trunk, "447700900003", now - 2 * DAY, alice, "accept")
    # Called back N times within the hour: questioned; N - 1 times, or later: not.
    called_back = decided(trunk, "447700900004", now - DAY, alice)
    for minutes in (5, 20, 60):
        decided(trunk, "447700900004", now - DAY + timedelta(minutes=minutes), None, "")
    decided(trunk, "447700900005", now - DAY, alice)
    for minutes in (5, 20, 61):
        decided(trunk, "447700900005", now - DAY + timedelta(minutes=minutes), None, "")
    # Older than D days: out of the window.
    decided(trunk, "447700900001", now - 8 * DAY, alice)

    found = {w.call_id: w for w in review.wrong_refusals(now)}
    assert set(found) == {in_contacts.pk, accepted_elsewhere.pk, called_back.pk}
    assert found[in_contacts.pk].why == ["the number is in the contacts"]
    assert found[accepted_elsewhere.pk].why == ["another operator accepted this number"]
    assert found[called_back.pk].why == ["called back 3 times within the hour"]

    answer = supervisor.post(
        "/review/", {"kind": "wrong_refusal", "subject": str(in_contacts.pk), "action": "approve"}
    )
    assert answer.status_code == 302
    supervisor.post(
        "/review/",
        {"kind": "wrong_refusal", "subject": str(called_back.pk), "action": "dismiss"},
    )
    assert [w.call_id for w in review.wrong_refusals(now)] == [accepted_elsewhere.pk]
    assert ReviewAction.objects.filter(kind="wrong_refusal").count() == 2
    page = supervisor.get("/review/").content.decode()
    assert "confirmed wrong" in page
    assert "the refusal was right" in page


def test_rules_to_review(trunk: Trunk, ops: list, supervisor: Client) -> None:
    now = timezone.now()
    idle = Rule.objects.create(pattern="+447700900001", action="refuse")
    Rule.objects.filter(pk=idle.pk).update(created_at=now - 100 * DAY)
    stale = Rule.objects.create(pattern="+447700900002", action="accept")
    Rule.objects.filter(pk=stale.pk).update(created_at=now - 200 * DAY, last_hit_at=now - 91 * DAY)
    recent_hit = Rule.objects.create(pattern="+447700900003", action="refuse")
    Rule.objects.filter(pk=recent_hit.pk).update(
        created_at=now - 200 * DAY, last_hit_at=now - 89 * DAY
    )
    expiring = Rule.objects.create(
        pattern="+447700900004", action="refuse", expires_at=now + 300 * DAY
    )
    Rule.objects.filter(pk=expiring.pk).update(created_at=now - 100 * DAY)
    young = Rule.objects.create(pattern="+447700900005", action="refuse")
    source = decided(trunk, "447700900006", now - HOUR, ops[0])
    from_card = Rule.objects.create(
        pattern="+447700900006", action="refuse", source_call=source, expires_at=now + DAY
    )
    found = {r.rule.pk: r.why for r in review.rules_to_review(now)}
    assert found == {
        idle.pk: ["never matched in 90 days"],
        stale.pk: ["no match in 90 days"],
        from_card.pk: ["made from a call's card"],
    }
    assert young.pk not in found

    supervisor.post("/review/", {"kind": "rule", "subject": str(idle.pk), "action": "approve"})
    supervisor.post("/review/", {"kind": "rule", "subject": str(stale.pk), "action": "dismiss"})
    supervisor.post("/review/", {"kind": "rule", "subject": str(from_card.pk), "action": "dismiss"})
    idle.refresh_from_db()
    assert not idle.enabled
    assert Rule.objects.get(pk=stale.pk).enabled
    assert review.rules_to_review(now) == []
    # A kept idle rule is asked about again after 90 days; a card rule, once looked at, is not.
    later = {r.rule.pk for r in review.rules_to_review(now + 91 * DAY)}
    assert stale.pk in later
    assert from_card.pk not in later
    assert ReviewAction.objects.filter(kind="rule").count() == 3


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"kind": "block", "action": "approve"},
        {"kind": "block", "subject": "447700900001"},
        {"kind": "nope", "subject": "1", "action": "approve"},
        {"kind": "block", "subject": "1", "action": "explode"},
        {"kind": "block", "subject": "+44 7700", "action": "approve"},
        {"kind": "block", "subject": "٤٤٧٧", "action": "approve"},
        {"kind": "block", "subject": "4" * 65, "action": "approve"},
        {"kind": "rule", "subject": "x", "action": "approve"},
        {"kind": "rule", "subject": "0", "action": "dismiss"},
        {"kind": "rule", "subject": str(2**63), "action": "dismiss"},
        {"kind": "wrong_refusal", "subject": "-1", "action": "approve"},
        {"kind": "wrong_refusal", "subject": "1\x00", "action": "approve"},
        {"kind": ["block", "rule"], "subject": "1", "action": "approve"},
    ],
)
def test_garbage_posts_are_400_and_change_nothing(supervisor: Client, data: dict) -> None:
    answer = supervisor.post("/review/", data)
    assert answer.status_code == 400
    assert not ReviewAction.objects.exists()
    assert not Rule.objects.exists()


def test_unknown_ids_are_not_in_the_queue(supervisor: Client) -> None:
    for kind in ("rule", "wrong_refusal"):
        answer = supervisor.post("/review/", {"kind": kind, "subject": "999", "action": "approve"})
        assert answer.status_code == 302
    assert not ReviewAction.objects.exists()


def test_who_may_use_the_queue(trunk: Trunk, ops: list) -> None:
    anonymous = Client()
    assert anonymous.get("/review/").status_code == 302
    operator = Client()
    operator.force_login(ops[0])
    assert operator.get("/review/").status_code == 403
    suggest(trunk, ops, "447700900001", timezone.now() - HOUR)
    post = {"kind": "block", "subject": "447700900001", "action": "approve"}
    assert operator.post("/review/", post).status_code == 403
    # Without the CSRF token a supervisor's POST is refused too.
    strict = Client(enforce_csrf_checks=True)
    sam = make_user("sam", group="Supervisors")
    strict.force_login(sam)
    assert strict.post("/review/", post).status_code == 403
    assert strict.get("/review/?x=%00&kind=block").status_code == 200
    lax = Client()
    lax.force_login(sam)
    assert lax.put("/review/").status_code == 405
    assert not Rule.objects.exists()
    # The supervisor navigation links it.
    assert 'href="/review/"' in strict.get("/stats/").content.decode()
    assert 'href="/review/"' not in operator.get("/").content.decode()


def test_stats_show_how_often_people_agreed_with_the_suggestion(
    trunk: Trunk, ops: list, supervisor: Client
) -> None:
    alice, bob, _ = ops
    now = timezone.now()
    for user, decision, suggestion in (
        (alice, "refuse", "refuse"),
        (bob, "refuse", "refuse"),
        (alice, "accept", "refuse"),
        (bob, "accept", "accept"),
        (alice, "refuse", ""),  # no suggestion: not counted
    ):
        decided(trunk, "447700900001", now - HOUR, user, decision, suggestion=suggestion)
    # A rule's decision with a suggestion is not a person agreeing; a call outside the period
    # is not counted either.
    decided(
        trunk, "447700900001", now - HOUR, None, "refuse", kind=DecidedBy.RULE, suggestion="refuse"
    )
    decided(trunk, "447700900001", now - 30 * DAY, alice, "refuse", suggestion="refuse")

    today = timezone.localdate()
    agreement = stats.suggestion_agreement(stats.Period(today - 6 * DAY, today, "day"))
    assert agreement == stats.Agreement(4, 3, 3, 2, 1, 1)
    assert agreement.rate == pytest.approx(0.75)
    page = supervisor.get("/stats/").content.decode()
    assert "People agreed with the suggestion on <strong>3 of 4</strong> calls (75%)" in page
