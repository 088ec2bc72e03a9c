"""Bad input on every API route, as every role: garbage query parameters, bodies of the wrong
type or size, unknown and impossible ids. Every answer is a 4xx (or a 2xx that ignored what it
does not read) with a JSON body; never a 500."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse

from tests.api.conftest import Caller, with_token
from tests.api.test_permissions import MATRIX, api_routes, sample_url
from tests.support.live import make_user

VALUES = [
    "",
    " ",
    "-1",
    "0",
    str(2**63),
    "9" * 400,
    "1e309",
    "NaN",
    "x" * 5000,
    "\x00",
    "9999-12-31T23:59:59+14:00",
    "0001-01-01",
    "2026-02-30",
    "<script>",
    "'; DROP TABLE screening_call; --",
    "%FF%FE",
    "%ED%A0%80",  # an encoded lone surrogate
]
BODIES: list[Any] = [
    [],
    [1, 2],
    "text",
    17,
    None,
    {"pattern": 5, "action": ["refuse"], "trunk": "x", "expires_at": 3},
    {"pattern": {"a": 1}, "name": None, "numbers": "x", "reason": 5, "note": ["x"]},
    {"numbers": [{"number": None}, 5, "x"] * 30, "name": "n" * 100_000},
    {"reason": "spam", "note": "\x00"},
    {"trunk": 2**70, "enabled": "maybe", "match": None},
]
RAW_BODIES = [b"{", b"\xff\xfe", b'{"a": ' * 2000, b"[" * 100_000]
IDS = ["0", str(2**63 - 1), str(2**63), str(10**30)]


def param_names(view: Any) -> list[str]:
    form = getattr(view, "query_form", None)
    declared = list(form.base_fields) if form is not None else []
    return [*declared, "page_size", "cursor", "format", "after"]


def check(answer: Any, what: str, wrong: list[str]) -> None:
    code = answer.status_code
    if code >= 500:
        wrong.append(f"{what} -> {code}")
    elif code >= 400 and code != 405 and "json" not in answer["Content-Type"]:
        wrong.append(f"{what} -> {code} not JSON: {answer['Content-Type']}")


@pytest.fixture
def everyone(callers: dict[str, Caller]) -> list[Caller]:
    root = make_user("root", group=None, is_superuser=True, is_staff=True)
    return [callers["operator"], callers["supervisor"], callers["admin"], with_token("root", root)]


@pytest.mark.django_db
def test_garbage_query_parameters_on_every_route(everyone: list[Caller]) -> None:
    from tests.support.routes import routes

    wrong: list[str] = []
    root = everyone[-1]
    views = {r.name: r.view for r in routes() if r.name in MATRIX}
    samples = {"call": 1, "rule": 1, "contact": 1}
    for name, _view in api_routes():
        url = sample_url(name, samples)
        for param in param_names(views[name]):
            for value in VALUES:
                query = f"{param}={quote(value, safe='%')}"
                # A superuser passes every role check, so every parameter is read.
                answer = root.call("GET", f"{url}?{query}")
                check(answer, f"GET {url}?{query[:60]}", wrong)
    assert not wrong, "\n".join(wrong[:40])


@pytest.mark.django_db
def test_garbage_bodies_and_ids_on_every_route(everyone: list[Caller]) -> None:
    wrong: list[str] = []
    for name, _view in api_routes():
        methods = [m for m in MATRIX[name] if m != "GET"] + ["PUT"]
        if name in {"api:call", "api:accept", "api:refuse", "api:rule", "api:contact"}:
            urls = [reverse(name, kwargs={"pk": pk}) for pk in IDS]
        else:
            urls = [reverse(name)]
        for url in urls:
            for caller in everyone:
                check(caller.call("GET", url), f"{caller.role} GET {url}", wrong)
            for method in methods:
                for caller in everyone:
                    for body in BODIES:
                        answer = caller.call(method, url, json.dumps(body))
                        check(answer, f"{caller.role} {method} {url} {str(body)[:50]}", wrong)
                    for raw in RAW_BODIES:
                        send = getattr(caller.client, method.lower())
                        answer = send(url, raw, content_type="application/json", **caller.headers())
                        check(answer, f"{caller.role} {method} {url} raw {raw[:20]!r}", wrong)
                    answer = getattr(caller.client, method.lower())(
                        url,
                        "a=%FF&reason=%00",
                        content_type="application/x-www-form-urlencoded",
                        **caller.headers(),
                    )
                    check(answer, f"{caller.role} {method} {url} form", wrong)
    assert not wrong, "\n".join(wrong[:40])


@pytest.mark.django_db
def test_unknown_ids_are_404_json(everyone: list[Caller]) -> None:
    root = everyone[-1]
    for url in ("/api/v1/calls/{}/", "/api/v1/rules/{}/", "/api/v1/contacts/{}/"):
        for pk in IDS:
            answer = root.call("GET", url.format(pk))
            assert answer.status_code == 404, (url, pk)
            assert "detail" in answer.json()
    for action in ("accept", "refuse"):
        for pk in IDS:
            answer = root.call("POST", f"/api/v1/calls/{pk}/{action}")
            assert answer.status_code == 404
            assert answer.json() == {"ok": False, "error": "No such call."}


def test_a_client_never_sees_a_django_html_error_page() -> None:
    """Not found under the prefix is not the API's (Django's 404), but it is never a 500."""
    assert Client().get("/api/v1/nothing-here/").status_code == 404
