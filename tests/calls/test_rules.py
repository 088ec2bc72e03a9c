"""Screening rules: normalisation, precedence, expiry, audit attribution, hit counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from screening.calls import intake, numbers, rules
from screening.models import AuditEvent, Call, CallStatus, Rule, Trunk
from screening.pbx.events import IncomingCall
from tests.support.live import make_user

pytestmark = pytest.mark.django_db

NUMBER = "+44 20 7946 0123"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+44 20 7946 0123", "442079460123"),
        ("0044 20 7946 0123", "442079460123"),
        ("020 7946 0123", "442079460123"),
        ("(020) 7946-0123", "442079460123"),
        ("+442079460123", "442079460123"),
        ("07700900123", "447700900123"),
        ("+33 1 23 45 67 89", "33123456789"),
        ("2079460123", "2079460123"),  # no prefix at all: taken as is
        ("", ""),
        ("anonymous", ""),
        ("Anonymous", ""),
        ("unknown", ""),
        ("sip:2005@10.0.0.1", ""),
        ("+", ""),
        ("00", ""),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert numbers.normalise(raw) == expected


def test_national_numbers_follow_the_trunks_numbering() -> None:
    france = Trunk(name="fr", country_code="33", national_prefix="0", international_prefix="00")
    assert numbers.normalise_for_trunk("01 23 45 67 89", france) == "33123456789"
    assert numbers.normalise_for_trunk("0044 20 7946 0123", france) == "442079460123"
    usa = Trunk(name="us", country_code="1", national_prefix="1", international_prefix="011")
    assert numbers.normalise_for_trunk("1 212 555 0100", usa) == "12125550100"
    assert numbers.normalise_for_trunk("011 44 20 7946 0123", usa) == "442079460123"


def rule(pattern: str, action: str, match: str = "exact", **extra: object) -> Rule:
    return Rule.objects.create(pattern=pattern, action=action, match=match, **extra)


@pytest.fixture
def trunk() -> Trunk:
    return Trunk.objects.create(name="peer-to-41", label="Main")


def test_patterns_are_normalised_on_save_and_empty_ones_rejected(trunk: Trunk) -> None:
    assert rule("020 7946", "refuse", "prefix").normalised == "44207946"
    france = Trunk.objects.create(name="fr", country_code="33")
    assert rule("0 1 23", "accept", "prefix", trunk=france).normalised == "33123"
    with pytest.raises(ValidationError):
        Rule(pattern="00", action="refuse").full_clean()


def test_changing_a_trunks_numbering_renormalises_its_rules(trunk: Trunk) -> None:
    national = rule("020 7946", "refuse", "prefix", trunk=trunk)
    everywhere = rule("020 7946", "refuse", "prefix")
    trunk.country_code = "353"
    trunk.save()
    national.refresh_from_db()
    everywhere.refresh_from_db()
    assert (national.normalised, everywhere.normalised) == ("353207946", "44207946")


def test_each_spelling_of_a_number_matches_an_exact_rule(trunk: Trunk) -> None:
    blocked = rule("020 7946 0123", "refuse")
    for caller in ("+442079460123", "00442079460123", "02079460123", "020 7946 0123"):
        assert rules.find_rule(caller, trunk) == blocked
    assert rules.find_rule("02079460124", trunk) is None
    assert rules.find_rule("anonymous", trunk) is None
    assert rules.find_rule("", trunk) is None


def test_exact_beats_prefix_and_longer_prefix_beats_shorter(trunk: Trunk) -> None:
    rule("+44 20", "refuse", "prefix")
    longer = rule("020 7946", "accept", "prefix")
    assert rules.find_rule(NUMBER, trunk) == longer
    exact = rule(NUMBER, "accept")
    rule("+44 20 7946 012", "refuse", "prefix")  # longer, still a prefix: exact wins
    assert rules.find_rule(NUMBER, trunk) == exact
    assert rules.find_rule("02079460999", trunk) == longer
    assert rules.find_rule("02071111111", trunk).pattern == "+44 20"


def test_trunk_specific_beats_all_trunks_and_other_trunks_do_not_match(trunk: Trunk) -> None:
    other = Trunk.objects.create(name="register-bt")
    everywhere = rule("+44 20", "refuse", "prefix")
    here = rule("020", "accept", "prefix", trunk=trunk)
    rule("020", "refuse", "prefix", trunk=other)
    assert rules.find_rule(NUMBER, trunk) == here
    assert rules.find_rule(NUMBER, other).trunk == other
    assert rules.find_rule(NUMBER, Trunk.objects.create(name="sip-gamma")) == everywhere


def test_refuse_wins_a_tie_then_the_older_rule(trunk: Trunk) -> None:
    rule("+44 20", "accept", "prefix")
    refuse = rule("0044 20", "refuse", "prefix")
    assert rules.find_rule(NUMBER, trunk) == refuse
    rule("020", "refuse", "prefix", note="newer")
    assert rules.find_rule(NUMBER, trunk) == refuse


def test_expired_and_disabled_rules_are_ignored(trunk: Trunk) -> None:
    now = timezone.now()
    rule(NUMBER, "refuse", expires_at=now - timedelta(seconds=1))
    rule(NUMBER, "refuse", enabled=False)
    assert rules.find_rule(NUMBER, trunk) is None
    soon = rule(NUMBER, "accept", expires_at=now + timedelta(minutes=5))
    assert rules.find_rule(NUMBER, trunk, now) == soon
    assert rules.find_rule(NUMBER, trunk, now + timedelta(minutes=6)) is None


def incoming(caller: str, n: int) -> IncomingCall:
    return IncomingCall(
        f"170.{n}", f"PJSIP/trunk-{n}", caller, "02079460000", "peer-to-41", "S", ""
    )


@pytest.mark.django_db(transaction=True)
def test_a_matching_rule_claims_the_call_at_intake_and_the_audit_names_it(trunk: Trunk) -> None:
    admin = make_user("root", group=None, is_superuser=True)
    spam = rule("07700 900", "refuse", "prefix", note="spam range", created_by=admin)
    received = intake.receive_call(incoming("+447700900123", 1), via="test")
    assert received.auto_decision == ("refuse", "rule")
    call = Call.objects.get(pk=received.call.pk)
    # Claimed in the transaction that stored it: never pending, never pushed as a new call.
    assert call.status == CallStatus.DECIDING
    assert (call.decision, call.decided_by_kind, call.rule) == ("refuse", "rule", spam)
    claimed = AuditEvent.objects.get(call=call, kind="claimed")
    assert f"rule #{spam.pk}" in claimed.message
    assert "spam range" in claimed.message
    assert claimed.detail["rule_id"] == spam.pk
    assert not AuditEvent.objects.filter(call=call, kind="pushed").exists()

    intake.receive_call(incoming("07700900999", 2), via="test")
    intake.receive_call(incoming("07700900999", 2), via="test")  # a duplicate is no new hit
    spam.refresh_from_db()
    assert spam.hit_count == 2
    assert spam.last_hit_at is not None

    spam.delete()  # the audit keeps naming it
    call.refresh_from_db()
    assert call.rule is None
    assert "spam range" in AuditEvent.objects.get(call=call, kind="claimed").message
