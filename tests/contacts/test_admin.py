"""Contacts in Django admin (search by number in any format), and the rules' action that pushes
permanent blocks to the PBX's block list, against the simulated PBX over real sockets."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from screening.models import (
    CallerNote,
    Contact,
    ContactSource,
    ReviewAction,
    ReviewKind,
    Rule,
    RuleMatch,
)
from screening.pbx.blocklist import LIST_NAME
from screening.simulator import SimulatorThread
from screening.simulator.directory import MAX_BLOCK_NUMBERS
from tests.conftest import messages_of
from tests.support.live import free_port, make_user

pytestmark = pytest.mark.django_db

CONTACTS = "/admin/screening/contact/"
RULES = "/admin/screening/rule/"


def found(admin_web: Client, query: str) -> list[str]:
    response = admin_web.get(CONTACTS, {"q": query})
    assert response.status_code == 200
    return sorted(c.name for c in response.context["cl"].result_list)


def test_admin_adds_a_manual_contact_with_numbers(admin_web: Client) -> None:
    response = admin_web.post(
        f"{CONTACTS}add/",
        {
            "name": "Jane Doe",
            "organisation": "Acme",
            "note": "Courier",
            "numbers-TOTAL_FORMS": "2",
            "numbers-INITIAL_FORMS": "0",
            "numbers-0-number": "+44 7700 900123",
            "numbers-0-label": "mobile",
            "numbers-1-number": "020 7946 0001",
            "numbers-1-label": "",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    contact = Contact.objects.get()
    assert contact.source == ContactSource.MANUAL
    assert list(contact.numbers.values_list("normalised", "label")) == [
        ("447700900123", "mobile"),
        ("442079460001", ""),
    ]
    page = admin_web.get(CONTACTS).content.decode()
    assert "+44 7700 900123, 020 7946 0001" in page
    assert "Entered by hand" in page


def test_search_by_name_organisation_and_number_in_any_format(admin_web: Client) -> None:
    jane = Contact.objects.create(name="Jane Doe", organisation="Acme")
    jane.numbers.create(number="07700 900123")
    bob = Contact.objects.create(name="Bob Roe", organisation="Zeta", source="pbx")
    bob.numbers.create(number="+44 20 7946 0001")
    bob.numbers.create(number="020 7946 0002")  # two numbers: still one row in the results
    assert found(admin_web, "jane") == ["Jane Doe"]
    assert found(admin_web, "zeta") == ["Bob Roe"]
    for typed in ("+44 7700 900123", "07700900123", "0044 7700 900 123", "447700900123"):
        assert found(admin_web, typed) == ["Jane Doe"], typed
    for typed in ("020 7946 0001", "+442079460001", "(020) 7946-0001"):
        assert found(admin_web, typed) == ["Bob Roe"], typed
    assert found(admin_web, "7946 000") == ["Bob Roe"]  # part of a number
    assert found(admin_web, "020 7946") == ["Bob Roe"]
    assert found(admin_web, "0161 496 0000") == []
    assert found(admin_web, "\u2603 nothing") == []
    assert admin_web.get(CONTACTS, {"q": "x\x00"}).status_code in {200, 302}


def rule(pattern: str, **fields: Any) -> Rule:
    values: dict[str, Any] = {"action": "refuse", "match": RuleMatch.EXACT, **fields}
    made = Rule(pattern=pattern, **values)
    made.save()
    return made


def push(admin_web: Client, rules: list[Rule]) -> list[str]:
    data = {
        "action": "push_to_pbx_block_list",
        "index": 0,
        "_selected_action": [r.pk for r in rules],
    }
    response = admin_web.post(RULES, data, follow=True)
    assert response.status_code == 200
    return messages_of(response)


def test_push_creates_then_merges_one_product_list(admin_web: Client, pbx: SimulatorThread) -> None:
    first = rule("+44 7700 900 111")
    said = push(admin_web, [first])
    assert said == [
        f"success: PBX block list {LIST_NAME!r} created (1 numbers on it): +44 7700 900 111"
    ]
    assert [(b["name"], b["limit_type"], b["number_list"]) for b in pbx.block_lists()] == [
        (LIST_NAME, "inbound", "+447700900111")
    ]
    assert Rule.objects.get(pk=first.pk).pbx_blocked_at is not None

    # An admin adds a number on the PBX by hand; our next push keeps it.
    ours = pbx.block_lists()[0]
    pbx.sim.directory.block_lists[ours["id"]]["number_list"] += "&01134960999"
    second = rule("020 7946 0222")
    allow = rule("020 7946 0333", action="accept")
    prefix = rule("+44 1632", match=RuleMatch.PREFIX)
    expiring = rule("020 7946 0444", expires_at=timezone.now() + timedelta(days=1))
    disabled = rule("020 7946 0555", enabled=False)
    said = push(admin_web, [first, second, allow, prefix, expiring, disabled])
    assert said == [
        f"success: PBX block list {LIST_NAME!r} updated (3 numbers on it): "
        "+44 7700 900 111, 020 7946 0222",
        "warning: Not pushed: 020 7946 0333: not a refuse rule; +44 1632: a prefix, not one "
        "number; 020 7946 0444: not permanent (it expires); 020 7946 0555: disabled",
    ]
    lists = pbx.block_lists()
    assert len(lists) == 1
    assert lists[0]["number_list"] == "+447700900111&01134960999&02079460222"
    pushed = set(Rule.objects.filter(pbx_blocked_at__isnull=False).values_list("pk", flat=True))
    assert pushed == {first.pk, second.pk}


def test_pbx_refusals_and_outages_are_admin_errors(
    admin_web: Client, pbx: SimulatorThread, settings: SettingsWrapper
) -> None:
    # A full list: the PBX answers an errcode; the admin sees it and nothing is marked pushed.
    many = [rule(f"07700 9{i:05d}") for i in range(MAX_BLOCK_NUMBERS + 1)]
    said = push(admin_web, many)
    assert len(said) == 1
    assert said[0].startswith("error: The PBX did not take the block list: block_numbers/create")
    assert "60002" in said[0]
    assert pbx.block_lists() == []
    assert not Rule.objects.filter(pbx_blocked_at__isnull=False).exists()

    one = many[:1]
    pbx.set_faults(http_500_rate=1.0)
    assert push(admin_web, one) == [
        "error: The PBX did not take the block list: block_numbers/list: HTTP 500"
    ]
    pbx.set_faults(http_500_rate=0.0, non_json_rate=1.0)
    assert push(admin_web, one) == [
        "error: The PBX did not take the block list: block_numbers/list: answer is not JSON"
    ]
    pbx.set_faults(non_json_rate=0.0)
    settings.PBX_BASE_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    said = push(admin_web, one)
    assert len(said) == 1
    assert said[0].startswith("error: The PBX did not take the block list: ")
    settings.PBX_BASE_URL = ""
    assert push(admin_web, one) == [
        "error: The PBX did not take the block list: PBX_BASE_URL not set"
    ]
    assert not Rule.objects.filter(pbx_blocked_at__isnull=False).exists()


def test_only_non_qualifying_rules_selected_asks_nothing_of_the_pbx(
    admin_web: Client, pbx: SimulatorThread
) -> None:
    allow = rule("020 7946 0333", action="accept")
    assert push(admin_web, [allow]) == ["warning: Not pushed: 020 7946 0333: not a refuse rule"]
    assert pbx.log("block_numbers/list") == []


NOTES = "/admin/screening/callernote/"


def test_admin_finds_notes_by_number_in_any_format_and_removes_a_wrong_one(
    admin_web: Client,
) -> None:
    author = make_user("ann", first_name="Ann")
    wrong = CallerNote.objects.create(number="447700900123", text="Owes us money", author=author)
    CallerNote.objects.create(number="447700900999", text="Courier", author=author)
    for typed in ("07700 900123", "+44 7700 900123", "0044-7700-900123", "Owes"):
        response = admin_web.get(NOTES, {"q": typed})
        assert [n.text for n in response.context["cl"].result_list] == ["Owes us money"], typed
    assert admin_web.get(NOTES + "add/").status_code == 403  # written from a call, not here
    response = admin_web.post(f"{NOTES}{wrong.pk}/delete/", {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert list(CallerNote.objects.values_list("text", flat=True)) == ["Courier"]


def test_review_answers_are_listed_and_never_edited_in_admin(admin_web: Client) -> None:
    boss = make_user("sue", first_name="Sue", group=None, is_staff=True)
    answer = ReviewAction.objects.create(
        kind=ReviewKind.BLOCK, subject="447700900123", approved=False, by=boss
    )
    page = admin_web.get("/admin/screening/reviewaction/")
    assert page.status_code == 200
    assert "447700900123" in page.content.decode()
    change = f"/admin/screening/reviewaction/{answer.pk}/change/"
    admin_web.post(change, {"subject": "0", "kind": "rule", "approved": "on"})
    admin_web.post(f"/admin/screening/reviewaction/{answer.pk}/delete/", {"post": "yes"})
    answer.refresh_from_db()
    assert (answer.subject, answer.approved) == ("447700900123", False)
