"""Whatever the PBX sends in a 30016, 30011 or 30012 either ends recorded, or is refused by the
parser with a message naming the field: never a database error half-way, which would leave a
call unrecorded and unscreened (the PBX routes it after its window).

Every string and number field of the three events is walked at, just above and far beyond its
limit (the width of the column that stores it), then combined at random (hypothesis), through the
real path: the frame is parsed, and ``intake.handle_event`` records it. A value longer than its
column is kept shortened and the call's audit keeps it as sent. Runs on SQLite and PostgreSQL
(which, unlike SQLite, refuses a value longer than its column)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db.models import Model
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screening.calls.intake import handle_event
from screening.models import AuditEvent, Call, Trunk
from screening.pbx import trunks
from screening.pbx.client import PbxClient
from screening.pbx.events import (
    MAX_FIELD_CHARS,
    MAX_INT,
    CallDetailRecord,
    CallStateChanged,
    Event,
    EventError,
    IncomingCall,
    parse_event,
    parse_frame,
)
from screening.simulator import SimulatorThread
from screening.simulator import server as simulator_server
from screening.simulator.generator import Trunk as SimTrunk

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "0123456789abcdef0123456789abcdef"


def width(model: type[Model], field: str) -> int:
    """The column's width, read from the model: what the database holds, not the parser's idea."""
    max_length = model._meta.get_field(field).max_length
    assert max_length is not None
    return max_length


# Every field each event carries, with the width that bounds it where it is kept: the column it is
# stored in, or (kept only in the audit's detail) the parser's bound for any string.
INBOUND = {
    "from": width(Call, "caller"),
    "to": width(Call, "called"),
    "trunk_name": width(Trunk, "name"),
    "channel_id": width(Call, "channel_id"),
    "member_status": MAX_FIELD_CHARS,
    "call_path": MAX_FIELD_CHARS,  # sent, not read
}
EXTENSION = {"number": width(Call, "caller"), "channel_id": width(Call, "channel_id")}
EXTENSION["member_status"] = MAX_FIELD_CHARS
CDR = {
    "call_from": width(Call, "caller"),
    "call_to": width(Call, "called"),
    "src_trunk_name": width(Trunk, "name"),
    "did_number": width(Call, "caller"),
    "status": MAX_FIELD_CHARS,
    "type": MAX_FIELD_CHARS,
    "time_start": MAX_FIELD_CHARS,
    "dst_trunk_name": MAX_FIELD_CHARS,  # sent, not read
    "recording": MAX_FIELD_CHARS,  # sent, not read
}
CALL_ID = width(Call, "pbx_call_id")
SN = width(Call, "pbx_sn")
NUMBERS = {"from", "to", "number", "call_from", "call_to", "did_number"}  # also sent as integers
DURATIONS = ("call_duration", "talk_duration")


def lengths(limit: int) -> list[int]:
    """Lengths to try for a field bounded by ``limit``: at, around and well past it."""
    return sorted({1, limit - 1, limit, limit + 1, 2 * limit, MAX_FIELD_CHARS + 1, 1000})


def text(length: int, seed: str = "8") -> str:
    return (seed * (length // len(seed) + 1))[:length]


# A value no earlier call used, so each delivery is a new call (channel ids are unique per call).
_unique = itertools.count(1)


def fresh_channel(length: int = 40) -> str:
    prefix = f"PJSIP/u{next(_unique):07d}-"
    return prefix + text(max(0, length - len(prefix)), "x")


def frame(event_type: int, msg: dict[str, Any], sn: Any = "3631A2124XXX") -> str:
    """A wire frame: ``msg`` as JSON text inside the envelope, as the PBX sends call events."""
    inner = json.dumps(msg, ensure_ascii=False)
    return json.dumps({"type": event_type, "sn": sn, "msg": inner}, ensure_ascii=False)


def incoming_msg(call_id: Any, **inbound: Any) -> dict[str, Any]:
    member = {
        "from": "07700900123",
        "to": "02079460000",
        "trunk_name": "peer-to-41",
        "channel_id": fresh_channel(),
        "member_status": "ALERT",
        "call_path": " ",
        **inbound,
    }
    return {"call_id": call_id, "members": [{"inbound": member}]}


def state_msg(call_id: Any, channel_id: str, inbound: dict[str, Any], ext: dict[str, Any]) -> Any:
    return {
        "call_id": call_id,
        "members": [
            {
                "inbound": {
                    "from": "07700900123",
                    "to": "02079460000",
                    "trunk_name": "peer-to-41",
                    "channel_id": channel_id,
                    "member_status": "ALERT",
                    **inbound,
                }
            },
            {
                "extension": {
                    "number": "2002",
                    "channel_id": "PJSIP/2002-00000012",
                    "member_status": "RING",
                    **ext,
                }
            },
        ],
    }


def cdr_msg(call_id: Any, **fields: Any) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "time_start": "2022-04-27 19:04:36",
        "call_from": "07700900123",
        "call_to": "02079460000",
        "call_duration": 24,
        "talk_duration": 0,
        "src_trunk_name": "peer-to-41",
        "dst_trunk_name": " ",
        "status": "NO ANSWER",
        "type": "Inbound",
        "recording": "",
        "did_number": "02079460000",
        **fields,
    }


def deliver(wire: str) -> Event | EventError:
    """The listener's path: parse the frame, then hand the event to intake."""
    try:
        event = parse_frame(wire)
    except EventError as exc:
        return exc
    async_to_sync(handle_event)(event, via="test")
    return event


def kept(sent: Any, limit: int, *, upper: bool = False) -> str:
    """What the product promises to keep of a sent value: trimmed, cut to the column's width."""
    full = str(sent).strip()
    full = full.upper() if upper else full
    return full[:limit].rstrip()


def assert_refused_clearly(error: EventError) -> None:
    """A refusal names the event and field, and says what is wrong with it."""
    message = str(error)
    assert message.split(" ", 1)[0] in {"30016", "30011", "30012", "event.sn"}, message
    assert any(
        reason in message
        for reason in (
            "is empty",
            "is missing",
            "PBX needs it back exactly",
            "out of range",
            "must be an integer",
        )
    ), message


def check_30016(msg: dict[str, Any], sn: Any, outcome: Event | EventError) -> Call | None:
    """A 30016 ends as a call offered to operators, every field stored within its column and, when
    shortened, kept as sent in the call's audit; or as a refusal that says why."""
    if isinstance(outcome, EventError):
        assert_refused_clearly(outcome)
        inbound = msg["members"][0]["inbound"]
        # Only what cannot be screened at all may be refused: a blank id, channel or trunk, or a
        # channel id too long to give back to the PBX.
        assert (
            not str(msg["call_id"]).strip()
            or not str(inbound["channel_id"]).strip()
            or not str(inbound["trunk_name"]).strip()
            or len(str(inbound["channel_id"]).strip()) > INBOUND["channel_id"]
        ), outcome
        return None
    assert isinstance(outcome, IncomingCall)
    call = Call.objects.select_related("trunk").get(
        pbx_call_id=outcome.call_id, channel_id=outcome.channel_id
    )
    received = AuditEvent.objects.get(call=call, kind="received")
    clipped = received.detail.get("clipped", {})
    inbound = msg["members"][0]["inbound"]
    at = "30016 msg.members[0].inbound."
    status = received.detail["member_status"]
    checks = [  # (path, as sent, as stored, its width, upper-cased)
        ("30016 msg.call_id", msg["call_id"], call.pbx_call_id, CALL_ID, False),
        ("event.sn", sn, call.pbx_sn, SN, False),
        (at + "from", inbound["from"], call.caller, INBOUND["from"], False),
        (at + "to", inbound["to"], call.called, INBOUND["to"], False),
        (at + "trunk_name", inbound["trunk_name"], call.trunk.name, INBOUND["trunk_name"], False),
        (at + "channel_id", inbound["channel_id"], call.channel_id, INBOUND["channel_id"], False),
        (at + "member_status", inbound["member_status"], status, MAX_FIELD_CHARS, True),
    ]
    for path, sent, value, limit, upper in checks:
        assert len(value) <= limit, path
        assert value == kept(sent, limit, upper=upper), path
        full = str(sent).strip()
        full = full.upper() if upper else full
        if len(full) > limit:
            assert clipped[path] == str(sent), path
        else:
            assert path not in clipped, path
    # Offered to the operators, inside its window: screened, not left to the PBX.
    assert call.status == "pending"
    assert AuditEvent.objects.filter(call=call, kind="pushed").exists()
    return call


def offer(call_id: Any) -> Call:
    """A plain 30016 with this call id, stored: what a 30011 or 30012 then reports on."""
    msg = incoming_msg(call_id)
    call = check_30016(msg, "SN", deliver(frame(30016, msg, "SN")))
    assert call is not None
    return call


def check_report(call: Call, kind: str, outcome: Event | EventError, before: int) -> None:
    """A 30011 or 30012 about a stored call ends in the call's audit, or as a clear refusal."""
    if isinstance(outcome, EventError):
        assert_refused_clearly(outcome)
        assert AuditEvent.objects.filter(call=call, kind=kind).count() == before
        return
    assert isinstance(outcome, CallStateChanged | CallDetailRecord)
    assert outcome.call_id == call.pbx_call_id
    rows = AuditEvent.objects.filter(call=call, kind=kind)
    assert rows.count() == before + 1
    detail = rows.order_by("-id").first().detail
    # What the parser shortened is kept as the PBX sent it.
    assert detail.get("clipped", {}) == dict(outcome.clipped)
    if isinstance(outcome, CallStateChanged):
        assert [m["status"] for m in detail["members"]] == [
            m.member_status for m in outcome.members
        ]
        assert all(len(m["status"]) <= MAX_FIELD_CHARS for m in detail["members"])
    else:
        assert detail["status"] == outcome.status
        assert len(detail["did_number"]) <= CDR["did_number"]


# --- every field at and past its limit ----------------------------------------------------------


def walk(fields: dict[str, int]) -> Iterator[tuple[str, Any]]:
    for name, limit in fields.items():
        for length in lengths(limit):
            yield name, text(length, "8" if name in NUMBERS else "a")
        if name in NUMBERS:
            yield name, int(text(limit + 1, "9"))  # a number sent as a JSON integer
        yield name, " " + text(limit, "b") + " "  # at the limit once trimmed


def test_every_30016_field_at_and_past_its_limit() -> None:
    for name, value in walk(INBOUND):
        if name == "channel_id":
            value = fresh_channel(len(str(value))) if isinstance(value, str) else value
        msg = incoming_msg(f"1700000000.{next(_unique)}", **{name: value})
        check_30016(msg, "SN", deliver(frame(30016, msg, "SN")))
    for length in lengths(CALL_ID):
        msg = incoming_msg(text(length, "1"))
        check_30016(msg, "SN", deliver(frame(30016, msg, "SN")))
    for length in lengths(SN):
        sn = text(length, "S")
        msg = incoming_msg(f"1700000000.{next(_unique)}")
        check_30016(msg, sn, deliver(frame(30016, msg, sn)))


def test_the_reported_case_a_long_caller_is_stored_and_offered() -> None:
    msg = incoming_msg("1700000001.1", **{"from": "8" * 80, "to": "0200", "trunk_name": "main"})
    call = check_30016(msg, "SN", deliver(frame(30016, msg, "SN")))
    assert call is not None
    assert call.caller == "8" * 64
    received = AuditEvent.objects.get(call=call, kind="received")
    assert received.detail["clipped"] == {"30016 msg.members[0].inbound.from": "8" * 80}


def test_every_30011_field_at_and_past_its_limit() -> None:
    cases = [("inbound", name, value) for name, value in walk(INBOUND)]
    cases += [("extension", name, value) for name, value in walk(EXTENSION)]
    for member, name, value in cases:
        call = offer(f"1700000002.{next(_unique)}")
        before = AuditEvent.objects.filter(call=call, kind="pbx_state").count()
        changes = {name: value}
        msg = state_msg(
            call.pbx_call_id,
            call.channel_id,
            changes if member == "inbound" else {},
            changes if member == "extension" else {},
        )
        check_report(call, "pbx_state", deliver(frame(30011, msg)), before)
    for length in lengths(CALL_ID):
        call = offer(text(length, "2"))
        before = AuditEvent.objects.filter(call=call, kind="pbx_state").count()
        msg = state_msg(text(length, "2"), call.channel_id, {}, {})
        check_report(call, "pbx_state", deliver(frame(30011, msg)), before)


def test_every_30012_field_at_and_past_its_limit() -> None:
    cases: list[tuple[str, Any]] = list(walk(CDR))
    for name in DURATIONS:
        cases += [(name, value) for value in (0, MAX_INT, MAX_INT + 1, -1, "24", " ", "9" * 13)]
    for name, value in cases:
        call = offer(f"1700000003.{next(_unique)}")
        before = AuditEvent.objects.filter(call=call, kind="pbx_cdr").count()
        msg = cdr_msg(call.pbx_call_id, **{name: value})
        check_report(call, "pbx_cdr", deliver(frame(30012, msg)), before)
    for length in lengths(CALL_ID):
        call = offer(text(length, "3"))
        before = AuditEvent.objects.filter(call=call, kind="pbx_cdr").count()
        check_report(call, "pbx_cdr", deliver(frame(30012, cdr_msg(text(length, "3")))), before)


# --- random combinations (hypothesis) -----------------------------------------------------------

SEEDS = st.sampled_from(["8", "+44 20", "abc-_.:/@", "ßéü", "٣٤📞中", " \u00a0x", "ﬃ"])
# Enough examples to mix every field's lengths; each one is a real delivery, on PostgreSQL too.
property_settings = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def value_for(
    limit: int, *, number: bool = False, cap: int | None = None
) -> st.SearchStrategy[Any]:
    """Values for a field: strings of every length in ``lengths`` (up to ``cap``), padded or not;
    for a number field also, now and then, a JSON integer."""
    sizes = [n for n in [0, *lengths(limit)] if cap is None or n <= cap]
    strings = st.builds(
        lambda length, seed, pad: pad + text(length, seed) + pad,
        st.sampled_from(sizes),
        SEEDS,
        st.sampled_from(["", " "]),
    )
    if not number:
        return strings
    return st.one_of(strings, strings, strings, st.integers(0, 10**80))


def fields_for(table: dict[str, int], cap: int | None = None) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {name: value_for(limit, number=name in NUMBERS, cap=cap) for name, limit in table.items()}
    )


@property_settings
@given(
    inbound=fields_for(INBOUND),
    call_id=value_for(CALL_ID),
    sn=value_for(SN),
    channel_length=st.sampled_from([0, 40, 256, 257]),
)
def test_any_30016_is_stored_and_offered_or_refused_clearly(
    inbound: dict[str, Any], call_id: str, sn: str, channel_length: int
) -> None:
    inbound["channel_id"] = fresh_channel(channel_length) if channel_length else " "
    msg = incoming_msg(call_id, **inbound)
    check_30016(msg, sn, deliver(frame(30016, msg, sn)))


@property_settings
@given(inbound=fields_for(INBOUND), ext=fields_for(EXTENSION), call_id=value_for(CALL_ID))
def test_any_30011_is_recorded_or_refused_clearly(
    inbound: dict[str, Any], ext: dict[str, Any], call_id: str
) -> None:
    if not call_id.strip():
        call_id = f"1700000004.{next(_unique)}"
    call = offer(call_id)
    inbound["channel_id"] = call.channel_id
    before = AuditEvent.objects.filter(call=call, kind="pbx_state").count()
    check_report(
        call, "pbx_state", deliver(frame(30011, state_msg(call_id, "", inbound, ext))), before
    )


@property_settings
@given(
    fields=fields_for(CDR),
    durations=st.fixed_dictionaries(
        {name: st.sampled_from([0, 21, MAX_INT, MAX_INT + 1, "24", " "]) for name in DURATIONS}
    ),
    call_id=value_for(CALL_ID),
)
def test_any_30012_is_recorded_or_refused_clearly(
    fields: dict[str, Any], durations: dict[str, Any], call_id: str
) -> None:
    if not call_id.strip():
        call_id = f"1700000005.{next(_unique)}"
    call = offer(call_id)
    before = AuditEvent.objects.filter(call=call, kind="pbx_cdr").count()
    msg = cdr_msg(call_id, **fields, **durations)
    check_report(call, "pbx_cdr", deliver(frame(30012, msg)), before)


# --- the webhook: never a 500 for an event the parser accepts -----------------------------------


def post_signed(body: bytes) -> Any:
    signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest())
    return Client().post(
        "/pbx/webhook", body, content_type="application/json", HTTP_X_SIGNATURE=signature.decode()
    )


@property_settings
# Lengths up to the parser's bound for any string: events the parser has always accepted.
@given(
    inbound=fields_for(INBOUND, cap=MAX_FIELD_CHARS),
    call_id=value_for(CALL_ID, cap=MAX_FIELD_CHARS),
    sn=value_for(SN, cap=MAX_FIELD_CHARS),
)
def test_the_webhook_records_every_30016_the_parser_accepts(
    inbound: dict[str, Any], call_id: str, sn: str, caplog: pytest.LogCaptureFixture
) -> None:
    inbound["channel_id"] = fresh_channel()
    msg = incoming_msg(call_id, **inbound)
    body = frame(30016, msg, sn).encode()
    caplog.clear()
    with override_settings(PBX_WEBHOOK_SECRET=SECRET), caplog.at_level(logging.WARNING):
        answer = post_signed(body)
    try:
        event: Event | EventError = parse_event(body)
    except EventError as exc:
        event = exc
    if isinstance(event, EventError):
        assert answer.status_code == 400
        assert str(event) in answer.json()["error"]
        assert f"webhook with a malformed event: {event}" in caplog.text
    else:
        assert answer.status_code == 200, answer.content
        check_30016(msg, sn, event)
        if event.clipped:  # and the log says what was shortened
            assert "kept shortened" in caplog.text


# --- trunk names from the PBX's trunk list ------------------------------------------------------


def test_trunk_sync_keeps_a_long_pbx_trunk_name_as_calls_on_it_arrive(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    long_name = "trunk-" + "t" * 200
    extra = SimTrunk(9, long_name, "peer", "192.0.2.9:5060", "02079460009", "2009")
    monkeypatch.setattr(simulator_server, "TRUNKS", (*simulator_server.TRUNKS, extra))
    with SimulatorThread(call_rate=0.0) as sim:
        client = PbxClient(sim.base_url, sim.client_id, sim.client_secret)
        result = trunks.sync_trunks(client)
    kept_name = long_name[: width(Trunk, "name")]
    assert kept_name in result.created
    msg = incoming_msg("1700000006.1", trunk_name=long_name)
    call = check_30016(msg, "SN", deliver(frame(30016, msg, "SN")))
    assert call is not None
    assert call.trunk.name == kept_name
    assert not call.trunk.auto_created  # the synced trunk, not a new one
