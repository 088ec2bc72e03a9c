"""Rules and contacts through the API: admin's validation with clear field errors, and every write
in the object's admin history naming the token."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.test import Client

from screening.models import Contact, ContactNumber, Rule, Trunk
from tests.api.conftest import Caller, admin_user, with_token


def errors(answer: Any) -> dict[str, list[str]]:
    assert answer.status_code == 400, answer.content
    return answer.json()


def admin_form_errors(client: Client, data: dict[str, str]) -> dict[str, Any]:
    """What admin's add form says about the same values."""
    page = client.post("/admin/screening/rule/add/", data)
    assert page.status_code == 200, "admin accepted what the API refused"
    return page.context["adminform"].form.errors


@pytest.mark.django_db
def test_rule_validation_matches_admin_field_by_field(callers: dict[str, Caller]) -> None:
    admin = callers["admin"]
    web = Client()
    web.force_login(admin.user)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"pattern": "abc", "action": "refuse"}, "pattern"),  # Rule.clean(): no digit
        ({"pattern": "", "action": "refuse"}, "pattern"),
        ({"pattern": "x" * 65, "action": "refuse"}, "pattern"),
        ({"pattern": "0207946", "action": "drop"}, "action"),
        ({"pattern": "0207946", "action": "refuse", "match": "regex"}, "match"),
        ({"pattern": "0207946", "action": "refuse", "trunk": 999999}, "trunk"),
        ({"pattern": "0207946", "action": "refuse", "reason": "bored"}, "reason"),
        ({"pattern": "0207946", "action": "refuse", "note": "n" * 257}, "note"),
        ({"pattern": "0207946"}, "action"),
    ]
    for body, field in cases:
        ours = errors(admin.call("POST", "/api/v1/rules/", body))
        assert list(ours) == [field], (body, ours)
        theirs = admin_form_errors(web, {"match": "exact", **body})
        assert field in theirs, (body, theirs)
        if field == "pattern" and body["pattern"] == "abc":
            assert ours[field] == list(theirs[field])  # the model's own sentence, word for word
    garbage = admin.call("POST", "/api/v1/rules/", {"pattern": "0207", "expires_at": "soon"})
    assert {"expires_at", "action"} <= set(errors(garbage))
    assert not Rule.objects.exists()


@pytest.mark.django_db
def test_rule_create_change_delete_are_recorded_with_the_token_name(db: None) -> None:
    admin = with_token("admin", admin_user(), name="CRM sync")
    trunk = Trunk.objects.create(name="peer-main")
    made = admin.call(
        "POST",
        "/api/v1/rules/",
        {"pattern": "+44 20 7946 0123", "action": "refuse", "trunk": trunk.pk, "note": "spam"},
    )
    assert made.status_code == 201, made.content
    rule = Rule.objects.get()
    assert made.json()["normalised"] == rule.normalised == "442079460123"
    assert rule.created_by == admin.user
    changed = admin.call("PATCH", f"/api/v1/rules/{rule.pk}/", {"enabled": False})
    assert changed.status_code == 200
    assert changed.json()["enabled"] is False
    # A PATCH is checked with the rest of the rule as it stands.
    bad = admin.call("PATCH", f"/api/v1/rules/{rule.pk}/", {"pattern": "---"})
    assert errors(bad) == {"pattern": ["Type at least one digit after any prefix."]}
    assert admin.call("DELETE", f"/api/v1/rules/{rule.pk}/").status_code == 204
    assert not Rule.objects.exists()
    history = list(
        LogEntry.objects.filter(object_id=str(rule.pk))
        .order_by("pk")
        .values_list("change_message", flat=True)
    )
    assert history == [
        "Added via API token 'CRM sync'.",
        "Changed (enabled) via API token 'CRM sync'.",
        "Deleted via API token 'CRM sync'.",
    ]
    assert admin.call("GET", f"/api/v1/rules/{rule.pk}/").status_code == 404


@pytest.mark.django_db
def test_admin_permissions_are_per_method(db: None) -> None:
    """Staff who may only view rules in admin may only GET them here."""
    viewer = admin_user("viewer")
    viewer.user_permissions.set(Permission.objects.filter(codename="view_rule"))
    caller = with_token("viewer", viewer)
    assert caller.call("GET", "/api/v1/rules/").status_code == 200
    answer = caller.call("POST", "/api/v1/rules/", {"pattern": "0207", "action": "refuse"})
    assert answer.status_code == 403
    not_staff = with_token("x", admin_user("not-staff"))
    not_staff.user.is_staff = False
    not_staff.user.save()
    assert not_staff.call("GET", "/api/v1/rules/").status_code == 403


@pytest.mark.django_db
def test_contacts_with_their_numbers(callers: dict[str, Caller]) -> None:
    admin = callers["admin"]
    assert errors(admin.call("POST", "/api/v1/contacts/", {"name": ""})) == {
        "name": ["This field may not be blank."]
    }
    bad_numbers = admin.call(
        "POST", "/api/v1/contacts/", {"name": "Ann", "numbers": [{"number": "1" * 65}, {}]}
    )
    assert set(errors(bad_numbers)) == {"numbers"}
    made = admin.call(
        "POST",
        "/api/v1/contacts/",
        {
            "name": "Ann Smith",
            "organisation": "Acme",
            "numbers": [
                {"number": "+44 7700 900123", "label": "mobile"},
                {"number": "020 7946 0001"},
            ],
        },
    )
    assert made.status_code == 201, made.content
    contact = Contact.objects.get()
    assert sorted(contact.numbers.values_list("normalised", flat=True)) == [
        "442079460001",
        "447700900123",
    ]
    assert made.json()["source"] == "manual"
    # Read-only fields are ignored, as admin's are not in its form.
    changed = admin.call(
        "PATCH",
        f"/api/v1/contacts/{contact.pk}/",
        {"numbers": [{"number": "07700 900999"}], "source": "pbx"},
    )
    assert changed.status_code == 200, changed.content
    assert [n["normalised"] for n in changed.json()["numbers"]] == ["447700900999"]
    contact.refresh_from_db()
    assert contact.source == "manual"
    assert contact.updated_at > contact.created_at
    # Other fields alone leave the numbers as they are.
    admin.call("PATCH", f"/api/v1/contacts/{contact.pk}/", {"note": "VIP"})
    assert ContactNumber.objects.count() == 1
    listed = admin.call("GET", "/api/v1/contacts/").json()
    assert [c["name"] for c in listed["results"]] == ["Ann Smith"]
    assert admin.call("DELETE", f"/api/v1/contacts/{contact.pk}/").status_code == 204
    assert not ContactNumber.objects.exists()
