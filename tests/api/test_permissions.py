"""Who may call what: every route of /api/v1/ (walked from the URL conf, so a new endpoint or a new
method without an entry here fails), every method it answers, every kind of caller."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from screening.models import Call, CallStatus, Contact, Rule
from tests.api.conftest import Caller
from tests.support.reporting import build_history
from tests.support.routes import routes

ROLES = ("operator", "supervisor", "admin")
REFUSED_CALLERS = ("anonymous", "bad_token", "revoked")
EVERYONE = set(ROLES)

# route name -> method -> the roles allowed (anyone else with a valid token gets 403).
MATRIX: dict[str, dict[str, set[str]]] = {
    "api:schema": {"GET": EVERYONE},
    "api:docs": {"GET": EVERYONE},
    "api:calls": {"GET": {"supervisor"}},
    "api:call": {"GET": {"supervisor"}},
    "api:accept": {"POST": {"operator"}},
    "api:refuse": {"POST": {"operator"}},
    "api:rules": {"GET": {"admin"}, "POST": {"admin"}},
    "api:rule": {"GET": {"admin"}, "PATCH": {"admin"}, "DELETE": {"admin"}},
    "api:contacts": {"GET": {"admin"}, "POST": {"admin"}},
    "api:contact": {"GET": {"admin"}, "PATCH": {"admin"}, "DELETE": {"admin"}},
    "api:stats": {"GET": {"supervisor"}},
}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def api_routes() -> list[tuple[str, Any]]:
    """(name, view class) of every route under /api/v1/."""
    found = [
        (route.name, route.view.view_class)
        for route in routes()
        if route.url.startswith("/api/v1/")
    ]
    assert len(found) >= len(MATRIX) - 1
    return found


def sample_url(name: str, samples: dict[str, int]) -> str:
    """The route with an id that exists: the decided call, the rule, the contact."""
    family = {"call": "call", "accept": "call", "refuse": "call", "rule": "rule"}
    family |= {"contact": "contact"}
    short = name.split(":", 1)[1]
    if short in family:
        return reverse(name, kwargs={"pk": samples[family[short]]})
    return reverse(name)


@pytest.fixture
def samples(db: None) -> dict[str, int]:
    build_history()
    decided = Call.objects.filter(status=CallStatus.ACCEPTED).first()
    rule = Rule.objects.create(pattern="+44 20 7946 0999", action="refuse")
    contact = Contact.objects.create(name="Sample")
    return {"call": decided.pk, "rule": rule.pk, "contact": contact.pk}


def test_every_api_route_and_method_has_an_entry_in_the_matrix() -> None:
    names = {name for name, _view in api_routes()}
    assert names == set(MATRIX), f"routes without an entry: {names - set(MATRIX)}"
    for name, view_class in api_routes():
        answered = {m for m in view_class().allowed_methods if m not in {"HEAD", "OPTIONS"}}
        assert answered == set(MATRIX[name]), (name, answered)


def test_the_permission_matrix(callers: dict[str, Caller], samples: dict[str, int]) -> None:
    wrong = []
    for name, _view in api_routes():
        url = sample_url(name, samples)
        # Unsupported methods too: who you are is settled before what you ask.
        for method in METHODS:
            allowed = MATRIX[name].get(method)
            body = {} if method in {"POST", "PATCH", "PUT"} else None
            for who in (*REFUSED_CALLERS, *ROLES):
                caller = callers[who]
                answer = caller.call(method, url, body)
                code = answer.status_code
                if who in REFUSED_CALLERS:
                    ok = (
                        code == 401
                        and answer["WWW-Authenticate"].startswith("Token")
                        and answer["Content-Type"] == "application/json"
                        and "detail" in answer.json()
                    )
                elif allowed is None:  # the role is checked first: 405 only to those let in
                    let_in = set().union(*MATRIX[name].values())
                    ok = code == (405 if who in let_in else 403)
                elif who in allowed:
                    ok = code < 500 and code not in {401, 403}
                else:
                    ok = code == 403 and "detail" in answer.json()
                if not ok:
                    wrong.append(f"{who} {method} {url} -> {code} {answer.content[:120]!r}")
    assert not wrong, "\n".join(wrong)


def test_an_allowed_role_gets_the_data(callers: dict[str, Caller], samples: dict[str, int]) -> None:
    """Not only "not refused": each role's own endpoints answer with what it asked for."""
    supervisor, admin, operator = callers["supervisor"], callers["admin"], callers["operator"]
    listed = supervisor.call("GET", "/api/v1/calls/").json()["results"]
    assert {row["id"] for row in listed} == set(Call.objects.values_list("pk", flat=True))
    assert supervisor.call("GET", "/api/v1/stats/?from=2026-03-02&to=2026-03-03").status_code == 200
    rules = admin.call("GET", "/api/v1/rules/").json()["results"]
    assert [r["id"] for r in rules] == [samples["rule"]]
    # A decided call: the dashboard's conflict, word for word.
    answer = operator.call("POST", f"/api/v1/calls/{samples['call']}/accept")
    assert answer.status_code == 409
    assert answer.json()["ok"] is False
    assert answer.json()["error"].startswith("Already decided by")


def test_a_trunk_for_another_operator_group_is_403_as_on_the_dashboard(
    callers: dict[str, Caller], samples: dict[str, int]
) -> None:
    from django.contrib.auth.models import Group

    call = Call.objects.get(pk=samples["call"])
    call.trunk.operator_group = Group.objects.create(name="Night shift")
    call.trunk.save()
    answer = callers["operator"].call("POST", f"/api/v1/calls/{call.pk}/refuse")
    assert answer.status_code == 403
    assert "another operator group" in answer.json()["error"]


def test_the_browser_session_works_with_csrf_for_writes(db: None) -> None:
    from tests.api.conftest import admin_user

    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user("session-admin"))
    assert client.get("/api/v1/rules/").status_code == 200
    body = {"pattern": "+44 20 7946 0100", "action": "refuse"}
    refused = client.post("/api/v1/rules/", body, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    client.get("/login/")  # sets the CSRF cookie, as any page with a form does
    token = client.cookies["csrftoken"].value
    made = client.post(
        "/api/v1/rules/", body, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert made.status_code == 201, made.content
    # A token needs no CSRF token: it is not sent by a browser on its own.
    assert not Rule.objects.exclude(pk=made.json()["id"]).exists()


def test_a_token_alone_needs_no_csrf_token(callers: dict[str, Caller]) -> None:
    admin = callers["admin"]
    admin.client = Client(enforce_csrf_checks=True)
    made = admin.call("POST", "/api/v1/rules/", {"pattern": "+44 20 7946 0101", "action": "accept"})
    assert made.status_code == 201, made.content


@pytest.mark.django_db
def test_a_call_with_its_timeline(callers: dict[str, Caller]) -> None:
    from datetime import UTC, datetime

    from screening.models import AuditEvent, AuditKind, Trunk
    from tests.support.reporting import make_call

    at = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    call = make_call(Trunk.objects.create(name="peer-main"), at, "failed", audit=True)
    AuditEvent.objects.create(
        call=call,
        kind=AuditKind.PBX_RESPONSE,
        at=at.replace(second=2),
        message="50 busy",
        detail={"errcode": 50, "errmsg": "busy", "round_trip_ms": 12.5, "extra": [1, {"a": 2}]},
    )
    answer = callers["supervisor"].call("GET", f"/api/v1/calls/{call.pk}/")
    assert answer.status_code == 200
    steps = answer.json()["timeline"]
    assert [s["kind"] for s in steps] == ["received", "pbx_response"]
    assert steps[1]["offset_ms"] == 2000
    assert steps[1]["alert"] is True
    assert steps[1]["detail"]["errcode"] == "50"
    assert steps[1]["detail"]["round trip (ms)"] == "12.5"
