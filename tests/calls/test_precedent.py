"""Precedent (screening.calls.precedent): the card's numbers against hand-computed ones, kept in
the transaction that records each decision, rebuilt from the call table to the same numbers, safe
under concurrent decisions, and the shadow suggestion exactly at its thresholds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from itertools import count
from unittest import mock

import pytest
from django.db import close_old_connections, connection
from django.test import override_settings
from django.utils import timezone

from screening.calls import decisions, intake, precedent
from screening.models import (
    CallerPrecedent,
    CallStatus,
    DecidedBy,
    Decision,
    Rule,
    Trunk,
)
from screening.pbx.answers import PbxAnswer
from screening.pbx.events import IncomingCall
from tests.support.live import make_user

pytestmark = pytest.mark.django_db(transaction=True)

NUMBER = "07700 900123"
KEY = "447700900123"  # NUMBER normalised on a trunk with the default prefixes
DAY = timedelta(days=1)
_ids = count(1)


@contextmanager
def clock(at: datetime) -> Iterator[None]:
    with mock.patch("django.utils.timezone.now", return_value=at):
        yield


def answer(decision: str) -> PbxAnswer:
    status = CallStatus.REFUSED if decision == Decision.REFUSE else CallStatus.ACCEPTED
    return PbxAnswer(status, "done", errcode=0, errmsg="SUCCESS", round_trip_ms=4.0)


def arrive(at: datetime, caller: str = NUMBER) -> intake.Received:
    n = next(_ids)
    event = IncomingCall(f"{n}.1", f"PJSIP/x-{n}", caller, "0207946000", "peer-to-41", "S", "")
    with clock(at):
        return intake.receive_call(event, via="test", received_at=at)


def by_person(at: datetime, decision: str, user: object, caller: str = NUMBER) -> object:
    """A call arriving at ``at``, decided by ``user`` and recorded, all at ``at``."""
    call = arrive(at, caller).call
    with clock(at):
        claimed = decisions.claim(call, decision, user=user)
        return decisions.finish(claimed, answer(decision)).call


def by_rule(at: datetime, decision: str, caller: str = NUMBER) -> object:
    rule = Rule.objects.create(pattern=caller, action=decision)
    received = arrive(at, caller)
    rule.delete()
    assert received.auto_decision == (decision, DecidedBy.RULE)
    with clock(at):
        return decisions.finish(received.call, answer(decision)).call


def by_trunk_policy(at: datetime, caller: str = NUMBER) -> object:
    Trunk.objects.update_or_create(name="peer-to-41", defaults={"screening_enabled": False})
    received = arrive(at, caller)
    Trunk.objects.filter(name="peer-to-41").update(screening_enabled=True)
    assert received.auto_decision == (Decision.ACCEPT, DecidedBy.TRUNK_POLICY)
    with clock(at):
        return decisions.finish(received.call, answer(Decision.ACCEPT)).call


def same_numbers(rebuilt: dict, incremental: dict) -> bool:
    """Equal, floats to rounding (the sums are added in another order)."""
    assert rebuilt.keys() == incremental.keys()
    for key, value in incremental.items():
        if isinstance(value, float):
            assert rebuilt[key] == pytest.approx(value, abs=1e-3), key
        else:
            assert rebuilt[key] == value, key
    return True


@override_settings(PRECEDENT_HALF_LIFE_DAYS=10)
def test_card_numbers_equal_hand_computed_ones() -> None:
    alice = make_user("alice", first_name="Alice", last_name="Adams")
    bob = make_user("bob")
    t0 = timezone.now() - 60 * DAY
    by_person(t0, Decision.ACCEPT, alice)
    last = by_person(t0 + 20 * DAY, Decision.REFUSE, bob)
    # Recorded after a later one (another process was slower): counted as of its own time.
    by_person(t0 + 10 * DAY, Decision.REFUSE, alice)
    by_rule(t0 + 15 * DAY, Decision.REFUSE)
    by_trunk_policy(t0 + 15 * DAY)
    last.reason = "spam"
    last.save(update_fields=["reason"])
    precedent.reason_recorded(last)

    now = t0 + 30 * DAY  # 30, 20 and 10 days after the three people's decisions
    card = precedent.card_summary(KEY, now)
    accept_w = 2**-3  # the acceptance, three half-lives old
    refuse_w = 2**-2 + 2**-1
    assert card["decided"] == 3
    assert card["refused"] == 2
    assert card["operators"] == 2
    assert card["auto_decided"] == 2  # the rule's refusal and the trunk policy's acceptance
    assert card["auto_refused"] == 1
    assert card["probability"] == pytest.approx((refuse_w + 1) / (refuse_w + accept_w + 2))
    assert card["probability"] == pytest.approx(1.75 / 2.875)
    assert card["weight"] == pytest.approx(0.875, abs=1e-3)
    assert card["sureness"] == pytest.approx(0.875 / 2.875, abs=1e-3)
    p = 1.75 / 2.875
    assert card["margin"] == pytest.approx(1.96 * (p * (1 - p) / 3.875) ** 0.5, abs=1e-3)
    assert card["last"]["decision"] == "refuse"
    assert card["last"]["reason"] == "spam"
    assert card["last"]["reason_label"] == "Spam or sales"
    assert card["last"]["by"] == "bob"
    assert card["last"]["at"] == int((t0 + 20 * DAY).timestamp() * 1000)
    assert card["last"]["call"] == last.pk

    # Rebuilt from the call table: the same numbers.
    assert precedent.rebuild() == 1
    assert same_numbers(precedent.card_summary(KEY, now), card)

    # The sums decay on read: one more half-life halves the weight, the counts stay.
    later = precedent.card_summary(KEY, now + 10 * DAY)
    assert later["weight"] == pytest.approx(0.875 / 2, abs=1e-3)
    assert later["decided"] == 3


def test_undecided_and_withheld_calls_count_for_nothing() -> None:
    bob = make_user("bob")
    now = timezone.now()
    arrive(now)  # pending, then expires: nobody decided
    withheld = arrive(now, caller="anonymous").call
    with clock(now):
        claimed = decisions.claim(withheld, Decision.REFUSE, user=bob)
        decisions.finish(claimed, answer(Decision.REFUSE))
    failed = arrive(now).call
    with clock(now):
        claimed = decisions.claim(failed, Decision.REFUSE, user=bob)
        decisions.finish(claimed, PbxAnswer(CallStatus.FAILED, "no", errcode=60002))
    assert not CallerPrecedent.objects.exists()
    assert precedent.card_summary(KEY, now) is None
    assert precedent.rebuild() == 0


def test_a_reason_on_an_older_call_does_not_change_the_last_one() -> None:
    bob = make_user("bob")
    now = timezone.now()
    older = by_person(now - DAY, Decision.REFUSE, bob)
    by_person(now, Decision.ACCEPT, bob)
    older.reason = "abusive"
    older.save(update_fields=["reason"])
    precedent.reason_recorded(older)
    card = precedent.card_summary(KEY, now)
    assert card["last"]["decision"] == "accept"
    assert card["last"]["reason"] == ""


def test_concurrent_decisions_on_one_number_are_all_counted() -> None:
    """Several threads (own database connections) finish calls of one new number at once: the
    row is created once and every decision is counted."""
    users = [make_user(f"op{i}") for i in range(4)]
    now = timezone.now()
    per_thread = 5
    claimed = []
    for user in users:
        for _ in range(per_thread):
            call = arrive(now).call
            with clock(now):
                claimed.append((decisions.claim(call, Decision.REFUSE, user=user), user))
    barrier = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def work(mine: list[object]) -> None:
        try:
            barrier.wait(timeout=10)
            for call in mine:
                decisions.finish(call, answer(Decision.REFUSE))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    threads = [
        threading.Thread(target=work, args=([c for c, u in claimed if u == user],))
        for user in users
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    row = CallerPrecedent.objects.get(number=KEY)
    total = len(users) * per_thread
    assert row.people_refused == total
    assert sorted(row.operators.values()) == [[0, per_thread]] * len(users)
    card = precedent.card_summary(KEY, now)
    assert card["weight"] == pytest.approx(total, rel=1e-3)
    assert precedent.rebuild() == 1
    assert same_numbers(precedent.card_summary(KEY, now), card)


@override_settings(SUGGEST_MIN_DECISIONS=5, SUGGEST_THRESHOLD=0.8)
def test_suggestion_appears_exactly_at_its_thresholds() -> None:
    """With the prior a = b = 1 and decisions made at the moment of reading: 3 refusals of 3
    reach 0.8 but are fewer than 5 decisions; 7 refusals and 1 acceptance are (7+1)/(8+2) = 0.8
    exactly; 6 and 2 are 0.7; 1 refusal and 7 acceptances are 0.2 (accept)."""
    bob = make_user("bob")
    now = timezone.now()

    def suggested(caller: str, refusals: int, acceptances: int) -> dict | None:
        for _ in range(refusals):
            by_person(now, Decision.REFUSE, bob, caller)
        for _ in range(acceptances):
            by_person(now, Decision.ACCEPT, bob, caller)
        received = arrive(now, caller)
        context = received.call.context
        assert context["suggestion"] == precedent.suggestion(context["precedent"])
        assert received.call.suggestion == (context["suggestion"] or {}).get("decision", "")
        assert received.call.status == CallStatus.PENDING  # shown, never applied
        return context["suggestion"]

    assert suggested("07700 900001", 4, 0) is None  # p = 5/6, but only 4 decisions
    assert suggested("07700 900002", 5, 0) == {"decision": "refuse", "probability": 6 / 7}
    assert suggested("07700 900003", 7, 1) == {"decision": "refuse", "probability": 0.8}
    assert suggested("07700 900004", 6, 2) is None  # 0.7
    assert suggested("07700 900005", 1, 7) == {"decision": "accept", "probability": 0.2}
    assert suggested("07700 900006", 2, 6) is None  # 0.3


def test_seeded_history_carries_reasons_notes_and_precedent() -> None:
    from screening.devtools.seed import seed_history
    from screening.models import Call, CallerNote

    seed_history(600, days=5, seed=7)
    refused = Call.objects.filter(
        status=CallStatus.REFUSED, decided_by_kind=DecidedBy.OPERATOR
    ).exclude(caller_key="")
    assert refused.exclude(reason="").exists()
    assert CallerNote.objects.count() == 4
    # The precedent of the number people refused most agrees with the call table.
    key = refused.values_list("caller_key", flat=True).order_by("caller_key").distinct().first()
    people = Call.objects.filter(
        caller_key=key,
        decided_by_kind=DecidedBy.OPERATOR,
        status__in=[CallStatus.ACCEPTED, CallStatus.REFUSED],
    )
    card = precedent.card_summary(key, timezone.now())
    assert card["decided"] == people.count()
    assert card["refused"] == people.filter(status=CallStatus.REFUSED).count()
    assert card["operators"] == people.values("decided_by").distinct().count()
    latest = people.order_by("-finished_at").first()
    assert card["last"]["call"] == latest.pk
    assert card["last"]["reason"] == latest.reason
