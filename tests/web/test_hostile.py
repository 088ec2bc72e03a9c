"""Hostile input, property-based: the webhook, the decide endpoints and what browsers can send on
the operator WebSocket. No 500, no crash, no database change from rejected input, a clear error.

Every GET page's query parameters, walked from the URL resolver with hostile values (extreme
dates, cursors at the edges of the datetime range, huge and non-numbers, NUL, overlong and
non-UTF-8 text, repeated parameters). (The event parser itself is fuzzed in
tests/pbx/test_events.py.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import QueryDict
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screening.consumers import OperatorConsumer
from screening.models import AuditEvent, Call, CallStatus, Trunk
from screening.reports.audit import SORTS
from tests.support.live import make_user
from tests.support.reporting import build_history
from tests.support.routes import routes

SECRET = "0123456789abcdef0123456789abcdef"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
pytestmark = pytest.mark.django_db(transaction=True)


def db_state() -> tuple[int, int, list[tuple[int, str, int]]]:
    calls = list(Call.objects.values_list("pk", "status", "version"))
    return Call.objects.count(), AuditEvent.objects.count(), calls


def sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mangled_frames(draw: st.DrawFn) -> bytes:
    """Frames that look like a 30016 with one part broken, or plain garbage."""
    kind = draw(st.sampled_from(["garbage", "json", "frame"]))
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    inbound = {
        "from": draw(st.one_of(st.text(max_size=70), json_values)),
        "to": "2002",
        "trunk_name": draw(st.one_of(st.text(max_size=140), st.just("peer-to-41"))),
        "channel_id": draw(st.one_of(st.text(max_size=300), json_values)),
        "member_status": "ALERT",
    }
    msg = {
        "call_id": draw(st.one_of(st.text(max_size=80), json_values)),
        "members": [{"inbound": inbound}],
    }
    frame = {
        "type": draw(st.sampled_from([30016, "30016", 30011, 30012, -1, None])),
        "sn": draw(st.text(max_size=10)),
        "msg": json.dumps(msg) if draw(st.booleans()) else msg,
    }
    return json.dumps(frame).encode()


@override_settings(PBX_WEBHOOK_SECRET=SECRET)
@FUZZ
@given(body=mangled_frames(), signed=st.booleans(), signature=st.text(max_size=60))
def test_the_webhook_never_fails_on_hostile_bodies(
    body: bytes, signed: bool, signature: str
) -> None:
    before = db_state()
    header = sign(body) if signed else signature
    answer = Client().post(
        "/pbx/webhook", body, content_type="application/json", HTTP_X_SIGNATURE=header
    )
    assert answer.status_code in {200, 400, 403, 413}, answer.content[:300]
    payload = answer.json()
    if answer.status_code == 200:
        assert payload == {"ok": True}
        return
    assert payload["ok"] is False, payload
    assert payload["error"], payload
    assert db_state() == before
    if not signed and signature != sign(body):
        assert answer.status_code == 403


@pytest.fixture
def operator_client() -> Client:
    client = Client()
    client.force_login(make_user("fuzzop"))
    return client


@pytest.fixture
def finished_call() -> Call:
    trunk = Trunk.objects.create(name="peer-to-41")
    now = timezone.now()
    return Call.objects.create(
        pbx_call_id="1.1",
        channel_id="PJSIP/x-1",
        trunk=trunk,
        received_at=now - timedelta(seconds=30),
        deadline=now - timedelta(seconds=20),
        status=CallStatus.EXPIRED,
    )


@FUZZ
@given(
    pk=st.one_of(st.integers(min_value=0, max_value=10**30), st.just(-1)),
    action=st.one_of(st.sampled_from(["accept", "refuse", "ACCEPT", ""]), st.text(max_size=40)),
    method=st.sampled_from(["post", "get", "put", "delete"]),
    body=st.binary(max_size=200),
    existing=st.booleans(),
)
def test_decide_endpoints_answer_every_hostile_request_cleanly(
    operator_client: Client,
    finished_call: Call,
    pk: int,
    action: str,
    method: str,
    body: bytes,
    existing: bool,
) -> None:
    before = db_state()
    target = finished_call.pk if existing else pk
    url = f"/calls/{target}/{quote(action, safe='')}"
    answer = operator_client.generic(
        method.upper(), url, body, content_type="application/octet-stream"
    )
    assert answer.status_code in {403, 404, 405, 409}, (
        url,
        answer.status_code,
        answer.content[:300],
    )
    if answer.headers.get("Content-Type", "").startswith("application/json"):
        assert answer.json()["error"]
    assert db_state() == before  # nothing rejected changed anything


def _strict_json(text: str) -> dict[str, Any]:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    value = json.loads(text, parse_constant=no_constants)
    assert isinstance(value, dict)
    return value


client_messages = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=100),
    json_values.map(json.dumps),
    st.builds(
        lambda kind, t, extra: json.dumps({"type": kind, "t": t, **extra}),
        st.sampled_from(["ping", "snapshot", "call", "decide", "", "PING"]),
        st.one_of(json_values, st.sampled_from([float("nan"), float("inf"), 10**400, True])),
        st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    ),
    st.just("x" * 5000),
)


@FUZZ
@given(messages=st.lists(client_messages, min_size=1, max_size=6))
def test_the_operator_socket_answers_every_hostile_message(
    finished_call: Call, messages: list[str | bytes]
) -> None:
    user = make_user("wsfuzz") if not _users() else _users()[0]
    before = db_state()

    async def scenario() -> None:
        communicator = WebsocketCommunicator(OperatorConsumer.as_asgi(), "/ws/operator/")
        communicator.scope["user"] = user
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        assert _strict_json(await communicator.receive_from(timeout=5))["type"] == "snapshot"
        for message in messages:
            key = "bytes" if isinstance(message, bytes) else "text"
            await communicator.send_input({"type": "websocket.receive", key: message})
            reply = _strict_json(await communicator.receive_from(timeout=5))
            assert reply["type"] in {"error", "pong", "snapshot"}, reply
            if reply["type"] == "error":
                assert reply["error"]
            if reply["type"] == "pong":
                t = reply["t"]
                assert t is None or (isinstance(t, int | float) and not isinstance(t, bool))
        await communicator.disconnect()

    async_to_sync(scenario)()
    assert db_state() == before


def _users() -> list[Any]:
    from django.contrib.auth import get_user_model

    return list(get_user_model().objects.filter(username="wsfuzz"))


# --- Every query parameter of every GET page ------------------------------------------------------
#
# The routes come from the URL resolver and each page's parameters from the one form its view
# declares (screening.reports.params.takes_query), Django's own redirect parameter for its login
# view, and Django's changelist parameters for the admin: a parameter added to a form is walked
# without touching this test. Each gets every hostile value below, as a supervisor, an operator
# and an admin, with the server's time zone at both extremes of the UTC offsets (+14:00, -12:00).
# No request may fail; an invalid value is a 400 or an error shown on the page.


def _cursor(value: Any, pk: Any = 1) -> str:
    raw = json.dumps([value, pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _q(value: str) -> str:
    return quote(value, safe="")


# (raw query-string value, must a typed field reject it?)
HOSTILE: list[tuple[str, bool]] = [
    *((_q(v), True) for v in ("9999-12", "0000-01", "0001-01-01", "9999-12-31", "0001-01")),
    *((_q(v), True) for v in ("9999-12-31T23:59", "0001-01-01T00:00", "9999-12-31 23:59:59")),
    *((_q(v), True) for v in ("9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-14:00")),
    *((_q(v), True) for v in ("2026-02-30", "2026-13", "-1", "0", str(2**63), str(10**30))),
    *((_q(v), True) for v in ("-" + str(2**64), "9" * 5000, "NaN", "inf", "-inf", "1e309")),
    *((_q(v), True) for v in ("x" * 5000, "\x00", "2026-01-01\x00", "a\x00b", "<script>")),
    *((_q(v), True) for v in ("'; DROP TABLE screening_call; --", "../../etc/passwd")),
    ("%FF%FE%C0%AF", True),  # not UTF-8
    ("%ED%A0%80", True),  # an encoded lone surrogate
    ("%", True),
    # Unicode digits: Python reads them as digits, so a date in them may well be valid.
    *(
        (_q(v), False)
        for v in (
            "\u0662\u0660\u0662\u0666-\u0660\u0661",
            "\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0661",
            "\uff12\uff10\uff12\uff16-\uff10\uff11-\uff10\uff11",
            "\u00b9\u00b2",
        )
    ),
    ("", False),
    (_q(" "), False),
    ("garbage", True),
]
# Page cursors at the edges of the datetime range with offsets, and other impossible ones, for the
# cursor parameters, with every sort order (each sort reads its cursor's value differently).
CURSORS: list[tuple[str, bool]] = [
    *(
        (_cursor(v, pk), True)
        for v, pk in (
            ("9999-12-31T23:59:59-14:00", 1),
            ("0001-01-01T00:00:00+14:00", 1),
            ("9999-12-31T23:59:59.999999+00:00", 1),
            ("2026-01-01T00:00:00", 1),  # naive
            ("2026-01-01T00:00:00+00:00", 2**63),
            ("2026-01-01T00:00:00+00:00", -1),
            ("2026-01-01T00:00:00+00:00", 10**30),
            ("2026-01-01T00:00:00+00:00", True),
            (10**30, 1),  # a duration no timedelta holds
            (999999999 * 86400 * 10**6, 1),  # a timedelta no database integer holds
            ("a\x00b", 1),
            ("\ud800", 1),
            (None, 1),
            ([1, 2], 1),
            (float("nan"), 1),
        )
    ),
    (_q(base64.urlsafe_b64encode(b"[" * 3000).decode()), True),
]
# Where a view reads no parameter of ours (Django's, the admin's), and for the operator, who may
# not see the report pages: a sample is enough.
SAMPLE = HOSTILE[::3]
# The values the issue reported, which must be rejected (not only survive).
REPORTED = {
    ("/stats/", "month=9999-12"),
    ("/stats/", "start=9999-12-31&end=9999-12-31"),
    ("/stats/", "end=0001-01-01"),
    ("/stats/", "by=hour&month=9999-12"),
    ("/audit/", "after=" + _cursor("9999-12-31T23:59:59-14:00")),
    ("/audit/", "after=" + _cursor("0001-01-01T00:00:00+14:00")),
    ("/audit/", "before=" + _cursor("9999-12-31T23:59:59-14:00")),
}
# Routes without a form: their views read no parameter, so any must be ignored.
UNDECLARED = ("x", "next", "month")


@dataclass
class Route:
    path: str
    form: type[forms.Form] | None  # the parameters the view declares
    extra: tuple[str, ...] = ()  # Django's own parameters (login redirect, admin changelist)
    # Parameters that only mean something together with another one: name -> query prefixes.
    contexts: dict[str, list[str]] = field(default_factory=dict)
    roles: tuple[str, ...] = ("supervisor", "operator")
    sample: list[tuple[str, bool]] = field(default_factory=lambda: SAMPLE)

    def params(self, *, dates_only: bool = False) -> list[str]:
        declared = list(self.form.base_fields) if self.form is not None else []
        if dates_only:  # the parameters the server's time zone changes the meaning of
            fields = self.form.base_fields if self.form is not None else {}
            return [
                name
                for name in [*declared, *self.extra]
                if isinstance(fields.get(name), forms.DateField | forms.DateTimeField)
                or name in self.contexts
            ]
        return [*declared, *self.extra] or list(UNDECLARED)

    def values(self, name: str, context: str) -> list[tuple[str, bool]]:
        if context:
            return CURSORS if name in {"after", "before"} else self.sample
        if self.form is None:
            return self.sample
        return HOSTILE + (CURSORS if name in self.contexts else [])


def _site_routes(call_pk: int) -> list[Route]:
    """Every route of ours (the admin's are walked as changelists), with its declared form."""
    found: list[Route] = []
    for route in routes(pk=str(call_pk)):
        if route.url.startswith("/admin/"):
            continue
        form = getattr(route.view, "query_form", None)
        redirect = getattr(getattr(route.view, "view_class", None), "redirect_field_name", None)
        contexts = {}
        if form is not None and "after" in form.base_fields:
            # A cursor is read by its sort's kind of value: one sort of each kind.
            kinds = {sort.kind: f"sort={sort.key}&" for sort in reversed(SORTS.values())}
            sorts = ["", *kinds.values()]
            contexts = {name: sorts for name in ("after", "before")}
        found.append(Route(route.url, form, (redirect,) if redirect else (), contexts))
    return found


def _admin_changelists(admin_user: Any) -> list[Route]:
    """Every admin changelist with the parameters Django's ChangeList reads."""
    from django.contrib.admin.views import main

    routes = []
    request_factory = RequestFactory()
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        request = request_factory.get(url)
        request.user = admin_user
        changelist = model_admin.get_changelist_instance(request)
        names = [p for spec in changelist.filter_specs for p in spec.expected_parameters()]
        contexts: dict[str, list[str]] = {}
        hierarchy = changelist.date_hierarchy
        if hierarchy:
            year, month, day = (f"{hierarchy}__{part}" for part in ("year", "month", "day"))
            names += [year, month, day]
            years = [f"{year}={y}&" for y in ("9999", "9998", "1", "2026")]
            contexts = {month: years, day: [f"{y}{month}=12&" for y in years]}
        names += [main.SEARCH_VAR, main.ORDER_VAR, main.PAGE_VAR, main.ALL_VAR, main.ERROR_FLAG]
        params = tuple(dict.fromkeys(names))
        routes.append(Route(url, None, params, contexts, ("admin",), SAMPLE[::2]))
    return routes


def _rejected(response: Any, route: Route, name: str, query: str) -> bool:
    """Did the page say the value is invalid: a 400, or the form's errors shown on the page?"""
    if response.status_code == 400:
        return True
    assert route.form is not None
    form = route.form(QueryDict(query))
    if form.is_valid() or name not in form.errors:
        return False
    html = response.content.decode()
    return all(escape(message) in html for message in form.errors[name])


@pytest.fixture
def walkers(db: None) -> dict[str, Client]:
    build_history()
    clients = {}
    for role, user in (
        ("supervisor", make_user("walk-sup", group="Supervisors")),
        ("operator", make_user("walk-op")),
        ("admin", make_user("walk-admin", group=None, is_superuser=True, is_staff=True)),
    ):
        clients[role] = Client()
        clients[role].force_login(user)
    return clients


# Everything with the server 14 hours ahead of UTC; the dates again with it 12 hours behind.
@pytest.mark.parametrize(
    ("zone", "dates_only"), [("Pacific/Kiritimati", False), ("Etc/GMT+12", True)]
)
def test_every_query_parameter_of_every_page_answers_hostile_values_cleanly(
    walkers: dict[str, Client], zone: str, dates_only: bool
) -> None:
    call_pk = Call.objects.order_by("pk").values_list("pk", flat=True)[0]
    with override_settings(TIME_ZONE=zone):
        admin_user = get_user_model().objects.get(username="walk-admin")
        routes = _site_routes(call_pk) + _admin_changelists(admin_user)
        assert {"/audit/", "/audit/export.csv", f"/audit/{call_pk}/", "/stats/"} <= {
            r.path for r in routes if r.form is not None
        }, "the report pages declare their parameters"
        walked = set()
        for route in routes:
            for name in route.params(dates_only=dates_only):
                for context in route.contexts.get(name, [""]):
                    _walk_parameter(walkers, route, name, context)
                walked.add((route.path, name))
        assert {("/stats/", "month"), ("/audit/", "after"), ("/audit/", "received_from")} <= walked
        for path, query in REPORTED:
            route = next(r for r in routes if r.path == path)
            name = query.rsplit("&", 1)[-1].split("=", 1)[0]
            assert _walk(walkers, route, name, query), f"{path}?{query} was not rejected"


def _walk_parameter(walkers: dict[str, Client], route: Route, name: str, context: str) -> None:
    """Every hostile value alone, and some repeated (the last one counts)."""
    for value, garbage in route.values(name, context):
        rejected = _walk(walkers, route, name, f"{context}{name}={value}")
        if rejected is False and garbage and route.form is not None:
            # A date, a choice, an object or a cursor: none of these values is one.
            field = route.form.base_fields[name]
            typed = not isinstance(field, forms.CharField | forms.BooleanField)
            cursor = name in route.contexts and not context  # the default order's cursor
            must_reject = typed or cursor
            assert not must_reject, f"{route.path}?{name}={value} was accepted"
    for value, _ in SAMPLE[::3]:
        for query in (f"{name}=2026-01-01&{name}={value}", f"{name}={value}&{name}=1"):
            _walk(walkers, route, name, context + query)


def _walk(walkers: dict[str, Client], route: Route, name: str, query: str) -> bool | None:
    """GET ``route`` with ``query`` as each role; no request may fail. Returns whether the
    supervisor (the one who may see the report pages) was told the value is invalid; None where
    the page has no form of ours."""
    url = f"{route.path}?{query}"
    said: bool | None = None
    sampled = any(query.endswith(f"={value}") for value, _ in SAMPLE)
    for role in route.roles:
        if role == "operator" and not sampled:
            continue
        response = walkers[role].get(url)  # an exception in the view fails the test here
        assert response.status_code < 500 or (
            route.path == "/healthz" and response.status_code == 503
        ), (role, url, response.status_code)
        if role == "supervisor" and route.form is not None and response.status_code in {200, 400}:
            said = _rejected(response, route, name, query)
    return said
