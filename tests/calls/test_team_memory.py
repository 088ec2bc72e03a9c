"""Team memory through its endpoints, in process: refusal reasons (checked before the claim,
edited by their operator for 5 minutes), notes per number (expiry, order, waiting cards updated),
follow-up rules, and what the audit shows of them (CSV columns, the call's page, admin).

The PBX side of a refusal with a reason is in tests/e2e/test_team_memory_live.py."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser, Group
from django.test import Client, override_settings
from django.utils import timezone

from screening.calls import intake, notes, rules, store
from screening.calls.context import card_context
from screening.calls.memory import ActionError
from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallerNote,
    CallStatus,
    DecidedBy,
    Rule,
    Trunk,
)
from screening.pbx.events import IncomingCall
from tests.support.live import make_user
from tests.support.reporting import make_call

# The views run their work in the database pool (other threads, other connections): commit.
pytestmark = pytest.mark.django_db(transaction=True)

NUMBER = "07700900123"
KEY = "447700900123"
_ids = count(1)


def client_for(user: AbstractBaseUser) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post(client: Client, url: str, data: Any, as_json: bool) -> Any:
    if as_json:
        return client.post(url, json.dumps(data), content_type="application/json")
    return client.post(url, data)


def pending_call(caller: str = NUMBER, trunk: str = "peer-to-41") -> Call:
    """A call as intake leaves it when nobody is online and the trunk waits for operators."""
    n = next(_ids)
    event = IncomingCall(f"1800000000.{n}", f"PJSIP/t-{n}", caller, "02079460000", trunk, "S", "")
    return store.load(intake.receive_call(event, via="test").call.pk)


def refused_call(user: AbstractBaseUser, *, ago: timedelta = timedelta(seconds=5)) -> Call:
    trunk, _ = Trunk.objects.get_or_create(name="peer-to-41")
    at = timezone.now() - ago
    call = make_call(
        trunk, at - timedelta(seconds=2), CallStatus.REFUSED, caller=NUMBER, user=user,
        decision_ms=1000, caller_key=KEY,
    )  # fmt: skip
    Call.objects.filter(pk=call.pk).update(decision="refuse")
    return store.load(call.pk)


# --- Reasons ---------------------------------------------------------------------------------

BAD_REFUSALS = [
    ({"reason": "maybe"}, "Unknown reason"),
    ({"reason": "SPAM"}, "Unknown reason"),
    ({"reason": "spam", "note": "x" * 501}, "too long"),
    ({"reason": "spam", "note": "bell\x07"}, "control characters"),
    ({"note": "no reason given"}, "goes with a reason"),
]
BAD_JSON_ONLY = [
    ({"reason": 1}, "Unknown reason"),
    ({"reason": ["spam"]}, "Unknown reason"),
    ({"reason": "spam", "note": 5}, "must be text"),
    ({"reason": "spam", "note": "\ud800"}, "control characters"),  # a lone surrogate
]


@pytest.mark.parametrize(
    ("data", "as_json", "says"),
    [(d, j, s) for d, s in BAD_REFUSALS for j in (False, True)]
    + [(d, True, s) for d, s in BAD_JSON_ONLY],
)
def test_a_bad_reason_is_a_400_that_decides_nothing(data: Any, as_json: bool, says: str) -> None:
    call = pending_call()
    response = post(client_for(make_user("alice")), f"/calls/{call.pk}/refuse", data, as_json)
    assert response.status_code == 400, response.content
    assert response.json()["ok"] is False
    assert says in response.json()["error"]
    call.refresh_from_db()
    assert (call.status, call.decision, call.reason) == (CallStatus.PENDING, "", "")
    assert not AuditEvent.objects.filter(call=call, kind=AuditKind.CLAIMED).exists()


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b'"spam"', b"null"], ids=["broken", "list", "str", "null"]
)
def test_a_body_that_is_not_a_json_object_is_a_400(body: bytes) -> None:
    call = pending_call()
    client = client_for(make_user("alice"))
    response = client.post(f"/calls/{call.pk}/refuse", body, content_type="application/json")
    assert response.status_code == 400
    assert Call.objects.get(pk=call.pk).status == CallStatus.PENDING


@pytest.mark.parametrize("as_json", [False, True])
def test_accept_takes_no_reason(as_json: bool) -> None:
    call = pending_call()
    client = client_for(make_user("alice"))
    response = post(client, f"/calls/{call.pk}/accept", {"reason": "spam"}, as_json)
    assert response.status_code == 400
    assert "Only a refusal" in response.json()["error"]
    assert Call.objects.get(pk=call.pk).status == CallStatus.PENDING


@pytest.mark.parametrize("as_json", [False, True])
def test_the_refusing_operator_sets_and_changes_the_reason(as_json: bool) -> None:
    alice = make_user("alice", first_name="Alice")
    call = refused_call(alice)
    client = client_for(alice)
    url = f"/calls/{call.pk}/reason"
    first = post(client, url, {"reason": "spam"}, as_json)
    assert first.status_code == 200, first.content
    shown = first.json()["call"]
    assert (shown["reason"], shown["reason_label"]) == ("spam", "Spam or sales")
    until = shown["reason_editable_until"]
    assert until == int((call.finished_at + timedelta(minutes=5)).timestamp() * 1000)
    second = post(client, url, {"reason": "abusive", "note": "  shouted  "}, as_json)
    assert second.status_code == 200
    call.refresh_from_db()
    assert (call.reason, call.reason_note) == ("abusive", "shouted")
    assert call.reason_at is not None
    rows = AuditEvent.objects.filter(call=call, kind=AuditKind.REASON).order_by("id")
    assert [(r.detail["reason"], r.detail["previous"]) for r in rows] == [
        ("spam", ""),
        ("abusive", "spam"),
    ]
    assert rows[1].actor == alice
    assert "from spam or sales to abusive: shouted" in rows[1].message


def test_only_the_refusing_operator_may_set_the_reason_and_only_for_5_minutes() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    call = refused_call(alice)
    response = client_for(bob).post(f"/calls/{call.pk}/reason", {"reason": "spam"})
    assert response.status_code == 403
    assert "alice" in response.json()["error"]
    late = refused_call(alice, ago=timedelta(minutes=5, seconds=1))
    response = client_for(alice).post(f"/calls/{late.pk}/reason", {"reason": "spam"})
    assert response.status_code == 409
    assert "Too late" in response.json()["error"]
    # Just inside the window it still works.
    in_time = refused_call(alice, ago=timedelta(minutes=4, seconds=50))
    in_time_answer = client_for(alice).post(f"/calls/{in_time.pk}/reason", {"reason": "spam"})
    assert in_time_answer.status_code == 200
    for c in (call, late):
        c.refresh_from_db()
        assert c.reason == ""
        assert not AuditEvent.objects.filter(call=c, kind=AuditKind.REASON).exists()


def test_reason_endpoint_refuses_bad_requests() -> None:
    alice = make_user("alice")
    client = client_for(alice)
    refused = refused_call(alice)
    trunk = Trunk.objects.get(name="peer-to-41")
    accepted = make_call(trunk, timezone.now(), CallStatus.ACCEPTED, user=alice, decision_ms=10)
    cases = [
        (refused.pk, {}, 400),
        (refused.pk, {"reason": "nonsense"}, 400),
        (refused.pk, {"reason": "spam", "note": "y" * 501}, 400),
        (accepted.pk, {"reason": "spam"}, 400),
        (99999999, {"reason": "spam"}, 404),
        (2**63, {"reason": "spam"}, 404),
    ]
    for pk, data, status in cases:
        response = client.post(f"/calls/{pk}/reason", data)
        assert response.status_code == status, (pk, data, response.content)
        assert response.json()["ok"] is False
    assert Client().post(f"/calls/{refused.pk}/reason", {"reason": "spam"}).status_code == 401
    supervisor = client_for(make_user("sam", group="Supervisors"))
    assert supervisor.post(f"/calls/{refused.pk}/reason", {"reason": "spam"}).status_code == 403
    assert client.get(f"/calls/{refused.pk}/reason").status_code == 405
    assert Call.objects.get(pk=refused.pk).reason == ""


# --- Notes -----------------------------------------------------------------------------------

LONDON_NOON = datetime(2026, 7, 1, 11, 0, tzinfo=UTC)  # 12:00 in London (BST)


@override_settings(TIME_ZONE="Europe/London")
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", None),
        (None, None),
        ("17:00", datetime(2026, 7, 1, 16, 0, tzinfo=UTC)),
        ("23:59", datetime(2026, 7, 1, 22, 59, tzinfo=UTC)),
        ("2026-07-02T09:00", datetime(2026, 7, 2, 8, 0, tzinfo=UTC)),  # local time
        ("2026-07-02T09:00:00+02:00", datetime(2026, 7, 2, 7, 0, tzinfo=UTC)),
        ("2026-07-01 12:30Z", datetime(2026, 7, 1, 12, 30, tzinfo=UTC)),
    ],
)
def test_note_expiry_reads_clock_times_as_today_in_the_server_time_zone(
    value: Any, expected: datetime | None
) -> None:
    with timezone.override("Europe/London"):
        assert notes.parse_expiry(value, LONDON_NOON) == expected


@override_settings(TIME_ZONE="Europe/London")
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("11:59", "already passed today"),
        ("12:00", "already passed today"),
        ("2026-06-30T09:00", "already passed"),
        ("24:00", "is not HH:MM"),
        ("17h", "is not HH:MM"),
        ("2026-13-01T10:00", "is not HH:MM"),
        ("tomorrow", "is not HH:MM"),
        ("9999-12-31T23:59-14:00", "is not HH:MM"),  # beyond the calendar once in UTC
        ("2028-01-01T00:00", "at most a year"),
        (1700000000, "must be text"),
        (["17:00"], "must be text"),
    ],
)
def test_bad_note_expiries_are_refused_with_a_reason(value: Any, says: str) -> None:
    with timezone.override("Europe/London"), pytest.raises(ActionError) as error:
        notes.parse_expiry(value, LONDON_NOON)
    assert error.value.status == 400
    assert says in error.value.message


def test_a_note_shows_on_later_cards_newest_first_and_expired_notes_do_not() -> None:
    alice, bob = make_user("alice", first_name="Alice"), make_user("bob", first_name="Bob")
    call = refused_call(alice)
    now = timezone.now()
    notes.add_note(call.pk, alice, {"text": "Sells windows"}, now=now - timedelta(hours=3))
    notes.add_note(
        call.pk, bob, {"text": "Courier", "expires_at": (now - timedelta(hours=1)).isoformat()},
        now=now - timedelta(hours=2),
    )  # fmt: skip
    notes.add_note(call.pk, bob, {"text": "Asked for Dana"}, now=now - timedelta(hours=1))
    later = pending_call("+44 7700 900123")  # the same number written differently
    shown = later.context["notes"]
    assert [n["text"] for n in shown] == ["Asked for Dana", "Sells windows"]
    assert [n["author"] for n in shown] == ["Bob", "Alice"]
    # While it was in force, the courier note showed.
    earlier = card_context(KEY, now - timedelta(hours=1, minutes=30))["notes"]
    assert "Courier" in [n["text"] for n in earlier]


def test_a_note_is_pushed_at_once_to_waiting_cards_of_the_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice = make_user("alice")
    earlier = refused_call(alice)
    waiting = pending_call()
    other = pending_call("07700900999")
    pushed: list[Call] = []
    monkeypatch.setattr(store, "push_call", lambda call: pushed.append(call) or 1)
    response = client_for(alice).post(
        f"/calls/{earlier.pk}/notes", {"text": " Expect a courier ", "expires_at": "23:59"}
    )
    assert response.status_code == 201, response.content
    note = response.json()["note"]
    assert note["text"] == "Expect a courier"
    assert note["expires_at"] is not None
    stored = CallerNote.objects.get(pk=note["id"])
    assert (stored.number, stored.author, stored.call_id) == (KEY, alice, earlier.pk)
    assert [c.pk for c in pushed] == [waiting.pk]
    assert pushed[0].context["notes"][0]["text"] == "Expect a courier"
    fresh = Call.objects.get(pk=waiting.pk)
    assert fresh.version == waiting.version + 1
    assert fresh.context["notes"] == pushed[0].context["notes"]
    assert fresh.context["contact"] == waiting.context["contact"]  # the rest of the card kept
    assert Call.objects.get(pk=other.pk).context["notes"] == []
    row = AuditEvent.objects.get(call=earlier, kind=AuditKind.NOTE)
    assert row.actor == alice
    assert "Expect a courier" in row.message
    assert row.detail["note_id"] == note["id"]


@pytest.mark.parametrize("as_json", [False, True])
def test_bad_notes_are_refused_and_nothing_is_stored(as_json: bool) -> None:
    alice = make_user("alice")
    call = refused_call(alice)
    client = client_for(alice)
    bad: list[dict[str, Any]] = [
        {},
        {"text": "   "},
        {"text": "x" * 501},
        {"text": "two\nlines"},
        {"text": "ok", "expires_at": "yesterday"},
    ]
    if as_json:
        bad += [{"text": 42}, {"text": ["a"]}, {"text": "ok", "expires_at": 5}]
    for data in bad:
        response = post(client, f"/calls/{call.pk}/notes", data, as_json)
        assert response.status_code == 400, (data, response.content)
        assert response.json()["error"]
    assert not CallerNote.objects.exists()
    assert not AuditEvent.objects.filter(kind=AuditKind.NOTE).exists()


def test_who_may_add_a_note() -> None:
    alice = make_user("alice")
    call = refused_call(alice)
    withheld = make_call(call.trunk, timezone.now(), CallStatus.REFUSED, caller="", user=alice)
    response = client_for(alice).post(f"/calls/{withheld.pk}/notes", {"text": "who?"})
    assert response.status_code == 400
    assert "withheld" in response.json()["error"]
    supervisor = client_for(make_user("sam", group="Supervisors"))
    assert supervisor.post(f"/calls/{call.pk}/notes", {"text": "seen in audit"}).status_code == 201
    nobody = client_for(make_user("nobody", group=None))
    assert nobody.post(f"/calls/{call.pk}/notes", {"text": "x"}).status_code == 403
    # A trunk for another group's operators: its calls are not this operator's to annotate.
    sales = Group.objects.create(name="Sales")
    Trunk.objects.filter(pk=call.trunk_id).update(operator_group=sales)
    assert client_for(alice).post(f"/calls/{call.pk}/notes", {"text": "x"}).status_code == 403
    assert Client().post(f"/calls/{call.pk}/notes", {"text": "x"}).status_code == 401
    assert CallerNote.objects.count() == 1


# --- Follow-up rules -------------------------------------------------------------------------


def test_refuse_and_block_creates_a_rule_for_the_number_that_decides_its_next_call() -> None:
    alice = make_user("alice", first_name="Alice")
    call = refused_call(alice)
    Call.objects.filter(pk=call.pk).update(reason="spam")
    before = timezone.now()
    response = client_for(alice).post(
        f"/calls/{call.pk}/follow-up", {"action": "block", "duration": "7d"}
    )
    assert response.status_code == 201, response.content
    body = response.json()
    rule = Rule.objects.get(pk=body["rule"]["id"])
    assert (rule.action, rule.match, rule.normalised, rule.trunk) == (
        "refuse", "exact", KEY, call.trunk,
    )  # fmt: skip
    assert (rule.created_by, rule.source_call_id, rule.reason) == (alice, call.pk, "spam")
    assert before + timedelta(days=7) <= rule.expires_at <= timezone.now() + timedelta(days=7)
    assert f"call #{call.pk}" in rule.note
    row = AuditEvent.objects.get(call=call, kind=AuditKind.RULE_CREATED)
    assert (row.actor, row.detail["rule_id"], row.detail["duration"]) == (alice, rule.pk, "7d")
    # The next call from the number, as the PBX writes it, is the rule's to decide.
    assert rules.find_rule("+447700900123", call.trunk) == rule
    nxt = pending_call("07700900123")
    assert (nxt.status, nxt.decided_by_kind, nxt.rule_id) == ("deciding", DecidedBy.RULE, rule.pk)


def test_a_second_block_extends_the_first_and_always_allow_replaces_it() -> None:
    alice, bob = make_user("alice"), make_user("bob")
    call = refused_call(alice)
    url = f"/calls/{call.pk}/follow-up"
    first = client_for(alice).post(url, {"action": "block", "duration": "1d", "reason": "abusive"})
    assert first.status_code == 201
    again = client_for(bob).post(url, {"action": "block", "duration": "permanent"})
    assert again.status_code == 200  # extended, not created
    assert again.json()["created"] is False
    rule = Rule.objects.get()
    assert (rule.expires_at, rule.reason, rule.created_by) == (None, "abusive", alice)
    shorter = client_for(bob).post(url, {"action": "block", "duration": "1d"})
    assert shorter.json()["rule"]["expires_at"] is None  # permanent stays permanent
    allow = client_for(bob).post(url, {"action": "allow", "duration": "permanent"})
    assert allow.status_code == 201
    assert allow.json()["disabled"] == [rule.pk]
    rule.refresh_from_db()
    assert rule.enabled is False
    assert rules.find_rule(NUMBER, call.trunk).action == "accept"
    assert AuditEvent.objects.filter(call=call, kind=AuditKind.RULE_CREATED).count() == 4


def test_follow_up_refuses_what_it_cannot_do() -> None:
    alice = make_user("alice")
    call = refused_call(alice)
    client = client_for(alice)
    url = f"/calls/{call.pk}/follow-up"
    for data in (
        {},
        {"action": "block"},
        {"action": "delete", "duration": "1d"},
        {"action": "block", "duration": "forever"},
        {"action": "block", "duration": "1d", "reason": "boring"},
        {"action": "allow", "duration": "1d", "reason": "spam"},
    ):
        response = client.post(url, data)
        assert response.status_code == 400, (data, response.content)
    waiting = pending_call()
    response = client.post(f"/calls/{waiting.pk}/follow-up", {"action": "block", "duration": "1d"})
    assert response.status_code == 409
    withheld = make_call(call.trunk, timezone.now(), CallStatus.REFUSED, caller="", user=alice)
    response = client.post(f"/calls/{withheld.pk}/follow-up", {"action": "block", "duration": "1d"})
    assert response.status_code == 400
    supervisor = client_for(make_user("sam", group="Supervisors"))
    assert supervisor.post(url, {"action": "block", "duration": "1d"}).status_code == 403
    admin_rule = Rule.objects.create(pattern=NUMBER, action="accept", trunk=call.trunk)
    response = client.post(url, {"action": "block", "duration": "1d"})
    assert response.status_code == 409
    assert f"rule #{admin_rule.pk}" in response.json()["error"]
    assert list(Rule.objects.all()) == [admin_rule]
    assert not AuditEvent.objects.filter(kind=AuditKind.RULE_CREATED).exists()


# --- What the audit shows --------------------------------------------------------------------


def test_the_csv_export_has_name_reason_and_note() -> None:
    alice = make_user("alice")
    call = refused_call(alice)
    Call.objects.filter(pk=call.pk).update(
        caller_name="Dana Scully", reason="wrong_number", reason_note="=asked for HR"
    )
    sam = client_for(make_user("sam", group="Supervisors"))
    response = sam.get("/audit/export.csv")
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [(r["caller_name"], r["reason"], r["note"]) for r in rows] == [
        ("Dana Scully", "wrong_number", "'=asked for HR")  # formula-safe like every text cell
    ]


def test_the_call_page_shows_name_reason_and_notes_and_takes_a_note() -> None:
    alice = make_user("alice")
    call = refused_call(alice)
    Call.objects.filter(pk=call.pk).update(caller_name="Dana Scully", reason="spam")
    notes.add_note(call.pk, alice, {"text": "Calls every Monday"})
    sam = client_for(make_user("sam", first_name="Sam", group="Supervisors"))
    page = sam.get(f"/audit/{call.pk}/").content.decode()
    for text in ("Dana Scully", "Spam or sales", "Calls every Monday", 'class="note-form"'):
        assert text in page, text
    response = sam.post(f"/audit/{call.pk}/notes", {"text": "Supervisor says: fine", "back": "a=1"})
    assert response.status_code == 302
    assert response["Location"] == f"/audit/{call.pk}/?back=a%3D1#notes"
    page = sam.get(f"/audit/{call.pk}/").content.decode()
    assert page.index("Supervisor says: fine") < page.index("Calls every Monday")  # newest first
    bad = sam.post(f"/audit/{call.pk}/notes", {"text": "later", "expires_at": "25:00"})
    assert bad.status_code == 400
    assert "is not HH:MM" in bad.content.decode()
    assert 'value="later"' in bad.content.decode()  # what was typed is kept
    assert CallerNote.objects.count() == 2
    operator = client_for(alice)
    assert operator.post(f"/audit/{call.pk}/notes", {"text": "x"}).status_code == 403
    no_csrf = Client(enforce_csrf_checks=True)
    no_csrf.force_login(make_user("sue", group="Supervisors"))
    assert no_csrf.post(f"/audit/{call.pk}/notes", {"text": "x"}).status_code == 403


def test_rules_admin_shows_creator_source_call_and_reason() -> None:
    alice = make_user("alice", first_name="Alice", is_staff=True, is_superuser=True)
    call = refused_call(alice)
    client = client_for(alice)
    client.post(
        f"/calls/{call.pk}/follow-up", {"action": "block", "duration": "1d", "reason": "spam"}
    )
    page = client.get("/admin/screening/rule/").content.decode()
    assert f'href="/audit/{call.pk}/"' in page
    assert "Spam or sales" in page
    assert "alice" in page
