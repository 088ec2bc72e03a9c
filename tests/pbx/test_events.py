"""Event and frame parsing: the documented examples, and garbage that must only raise EventError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screening.pbx.events import (
    MAX_FIELD_CHARS,
    MAX_FRAME_BYTES,
    CallDetailRecord,
    CallMember,
    CallStateChanged,
    EventError,
    HeartbeatResponse,
    IncomingCall,
    OtherEvent,
    SubscribeAck,
    parse_event,
    parse_frame,
)
from screening.simulator import SimulatorThread

# docs/pbx.md, verbatim wire frame (msg is JSON text).
DOC_30016_FRAME = (
    '{"type":30016,"sn":"3631A2124XXX","msg":"{\\"call_id\\":\\"1648861726.280\\",'
    '\\"members\\":[{\\"inbound\\":{\\"from\\":\\"5503301\\",\\"to\\":\\"2002\\",'
    '\\"trunk_name\\":\\"peer-to-41\\",\\"channel_id\\":\\"PJSIP/trunk-peer-to-41-endpoint-000000b5\\",'
    '\\"member_status\\":\\"ALERT\\",\\"call_path\\":\\" \\"}}]}"}'
)
DOC_30016_MSG: dict[str, Any] = {
    "call_id": "1648861726.280",
    "members": [
        {
            "inbound": {
                "from": "5503301",
                "to": "2002",
                "trunk_name": "peer-to-41",
                "channel_id": "PJSIP/trunk-peer-to-41-endpoint-000000b5",
                "member_status": "ALERT",
                "call_path": " ",
            }
        }
    ],
}
DOC_30016 = IncomingCall(
    call_id="1648861726.280",
    channel_id="PJSIP/trunk-peer-to-41-endpoint-000000b5",
    caller="5503301",
    called="2002",
    trunk_name="peer-to-41",
    sn="3631A2124XXX",
    member_status="ALERT",
)
# docs/pbx.md (illustrative).
DOC_30011_MSG: dict[str, Any] = {
    "call_id": "1648861726.280",
    "members": [
        {
            "inbound": {
                "from": "5503301",
                "to": "2002",
                "trunk_name": "peer-to-41",
                "channel_id": "PJSIP/trunk-peer-to-41-endpoint-000000b5",
                "member_status": "ANSWERED",
                "call_path": "",
            }
        },
        {
            "extension": {
                "number": "2002",
                "channel_id": "PJSIP/2002-00000012",
                "member_status": "ANSWER",
                "call_path": "",
            }
        },
    ],
}
# docs/pbx.md, the documented example.
DOC_30012_MSG: dict[str, Any] = {
    "call_id": "1651057476.362",
    "time_start": "2022-04-27 19:04:36",
    "call_from": "2005",
    "call_to": "2002",
    "call_duration": 24,
    "talk_duration": 21,
    "src_trunk_name": " ",
    "dst_trunk_name": " ",
    "pin_code": " ",
    "status": "ANSWERED",
    "type": "Internal",
    "recording": "20220427190445-1651057476.362-2005-2002-Internal.wav",
    "did_number": " ",
    "did_name": "",
    "agent_ring_time": 0,
    "uid": "2024111913594421D77",
    "call_note_id": "20250307162604-15379",
    "enb_call_note": 1,
}


def envelope(event_type: Any, msg: Any, *, as_text: bool = True, sn: str = "3631A2124XXX") -> str:
    return json.dumps({"type": event_type, "sn": sn, "msg": json.dumps(msg) if as_text else msg})


def incoming(**inbound: Any) -> dict[str, Any]:
    member = dict(DOC_30016_MSG["members"][0]["inbound"], **inbound)
    return {"call_id": "1.1", "members": [{"inbound": member}]}


def drop(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


def error_of(data: Any) -> str:
    with pytest.raises(EventError) as info:
        parse_frame(data) if isinstance(data, str) else parse_event(data)
    return str(info.value)


# --- documented examples ------------------------------------------------------------------------


def test_doc_30016_frame_with_msg_as_string() -> None:
    assert parse_frame(DOC_30016_FRAME) == DOC_30016
    assert parse_event(DOC_30016_FRAME) == DOC_30016
    assert parse_event(DOC_30016_FRAME.encode()) == DOC_30016


def test_doc_30016_with_msg_as_object() -> None:
    assert parse_frame(envelope(30016, DOC_30016_MSG, as_text=False)) == DOC_30016
    as_mapping = {"type": 30016, "sn": "3631A2124XXX", "msg": DOC_30016_MSG}
    assert parse_event(as_mapping) == DOC_30016


def test_30016_takes_first_inbound_member_and_allows_withheld_caller() -> None:
    msg = {
        "call_id": "9.9",
        "members": [
            {"extension": {"number": "2002", "channel_id": "x", "member_status": "RING"}},
            {"inbound": {"to": "2002", "trunk_name": "t", "channel_id": "c1"}},
            {"inbound": {"from": "1", "to": "2", "trunk_name": "u", "channel_id": "c2"}},
        ],
    }
    event = parse_event(envelope(30016, msg))
    assert event == IncomingCall("9.9", "c1", "", "2002", "t", "3631A2124XXX", "")


def test_30016_trims_blanks_and_tolerates_string_type() -> None:
    frame = json.dumps(
        {"type": "30016", "sn": " SN ", "msg": json.dumps(incoming(**{"from": " "}))}
    )
    event = parse_frame(frame)
    assert isinstance(event, IncomingCall)
    assert event.caller == ""
    assert event.sn == "SN"


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (drop(DOC_30016_MSG, "call_id"), "30016 msg.call_id is missing"),
        ({**DOC_30016_MSG, "call_id": " "}, "30016 msg.call_id is empty"),
        ({**DOC_30016_MSG, "call_id": True}, "30016 msg.call_id must be a string, not a boolean"),
        (drop(DOC_30016_MSG, "members"), "30016 msg.members is missing"),
        ({**DOC_30016_MSG, "members": {}}, "30016 msg.members must be an array, not an object"),
        ({**DOC_30016_MSG, "members": []}, "30016 msg.members has no inbound member"),
        ({**DOC_30016_MSG, "members": [7]}, "30016 msg.members[0] must be an object, not int"),
        (
            {**DOC_30016_MSG, "members": [{"inbound": []}]},
            "30016 msg.members[0].inbound must be an",
        ),
        (
            {
                **DOC_30016_MSG,
                "members": [{"inbound": drop(incoming()["members"][0]["inbound"], "channel_id")}],
            },
            "30016 msg.members[0].inbound.channel_id is missing",
        ),
        (incoming(trunk_name=""), "30016 msg.members[0].inbound.trunk_name is empty"),
        (incoming(to=None), "30016 msg.members[0].inbound.to must be a string, not null"),
        (incoming(channel_id="x" * (MAX_FIELD_CHARS + 1)), "channel_id is longer than 256"),
        (incoming(channel_id="PJSIP/\x00"), "channel_id contains a control character"),
        (
            incoming(trunk_name="\ud800"),
            "trunk_name contains a control character or lone surrogate",
        ),
        ([DOC_30016_MSG], "30016 msg must be an object, not an array"),
    ],
)
def test_30016_malformed(msg: Any, message: str) -> None:
    assert message in error_of(envelope(30016, msg))


def test_doc_30011() -> None:
    event = parse_event(envelope(30011, DOC_30011_MSG))
    assert event == CallStateChanged(
        call_id="1648861726.280",
        sn="3631A2124XXX",
        members=(
            CallMember(
                kind="inbound",
                channel_id="PJSIP/trunk-peer-to-41-endpoint-000000b5",
                member_status="ANSWERED",
                number="",
                caller="5503301",
                called="2002",
                trunk_name="peer-to-41",
            ),
            CallMember(
                kind="extension",
                channel_id="PJSIP/2002-00000012",
                member_status="ANSWER",
                number="2002",
                caller="",
                called="",
                trunk_name="",
            ),
        ),
    )
    assert parse_event(envelope(30011, DOC_30011_MSG, as_text=False)) == event


def test_30011_outbound_member_and_unknown_member() -> None:
    outbound = {
        "from": "2002",
        "to": "5550",
        "trunk_name": "t",
        "channel_id": "c",
        "member_status": "EARLYMEDIA",
    }
    event = parse_event(envelope(30011, {"call_id": "1.2", "members": [{"outbound": outbound}]}))
    assert isinstance(event, CallStateChanged)
    assert event.members[0].kind == "outbound"
    assert event.members[0].member_status == "EARLYMEDIA"
    bad = {"call_id": "1.2", "members": [{"queue": {}}]}
    assert "30011 msg.members[0] has none of inbound, outbound, extension" in error_of(
        envelope(30011, bad)
    )


def test_doc_30012() -> None:
    event = parse_event(envelope(30012, DOC_30012_MSG))
    assert isinstance(event, CallDetailRecord)
    assert event.call_id == "1651057476.362"
    assert event.status == "ANSWERED"
    assert (event.call_from, event.call_to) == ("2005", "2002")
    assert (event.call_duration, event.talk_duration) == (24, 21)
    assert event.src_trunk_name == ""
    assert event.did_number == ""
    assert event.time_start == "2022-04-27 19:04:36"
    assert event.call_type == "Internal"
    assert event.raw["uid"] == "2024111913594421D77"
    assert json.loads(json.dumps(event.raw)) == DOC_30012_MSG  # storable in a JSONField
    assert parse_event(envelope(30012, DOC_30012_MSG, as_text=False)) == event


def test_30012_normalises_status_and_numeric_strings() -> None:
    msg = {**DOC_30012_MSG, "status": " no answer ", "call_duration": "7", "talk_duration": " "}
    event = parse_event(envelope(30012, msg))
    assert isinstance(event, CallDetailRecord)
    assert (event.status, event.call_duration, event.talk_duration) == ("NO ANSWER", 7, 0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "30012 msg.call_duration is out of range"),
        (2**40, "30012 msg.call_duration is out of range"),
        (1.5, "30012 msg.call_duration must be an integer"),
        (True, "30012 msg.call_duration must be an integer, not a boolean"),
        ("1e9", "30012 msg.call_duration must be an integer"),
        ([], "30012 msg.call_duration must be an integer, not an array"),
    ],
)
def test_30012_bad_duration(value: Any, message: str) -> None:
    assert message in error_of(envelope(30012, {**DOC_30012_MSG, "call_duration": value}))


def test_other_event_passes_msg_through() -> None:
    event = parse_event(envelope(30008, {"extension": "2002", "status": "Idle"}))
    assert event == OtherEvent(
        type=30008, sn="3631A2124XXX", msg={"extension": "2002", "status": "Idle"}
    )
    system = parse_event(envelope(30034, {"alert": 1}, as_text=False))
    assert system == OtherEvent(type=30034, sn="3631A2124XXX", msg={"alert": 1})


def test_simulator_30016_parses(pbx_sim: SimulatorThread) -> None:
    offered = pbx_sim.inject("07700900123", "02079460000", "peer-to-41")
    envelope = offered["envelope"]
    for data in (envelope, json.dumps(envelope)):
        event = parse_event(data)
        assert isinstance(event, IncomingCall)
        assert (event.call_id, event.channel_id) == (offered["call_id"], offered["channel_id"])
        assert (event.caller, event.called, event.trunk_name) == (
            "07700900123",
            "02079460000",
            "peer-to-41",
        )


# --- frames -------------------------------------------------------------------------------------


def test_heartbeat_and_subscribe_ack() -> None:
    assert parse_frame("heartbeat response") == HeartbeatResponse()
    assert parse_frame("heartbeat response\n") == HeartbeatResponse()
    assert parse_frame('{"errcode":0,"errmsg":"SUCCESS"}') == SubscribeAck(0, "SUCCESS")
    assert parse_frame('{"errcode":40002,"errmsg":"PARAMETER ERROR"}') == SubscribeAck(
        40002, "PARAMETER ERROR"
    )
    assert parse_frame('{"errcode":-1}') == SubscribeAck(-1, "")


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("heartbeat", "frame is not valid JSON"),
        ("", "frame is not valid JSON"),
        ("[1, 2]", "event must be an object, not an array"),
        ("{}", "event.type is missing"),
        ('{"type": 30016, "sn": "x"}', "30016 event.msg is missing"),
        ('{"type": "abc", "msg": {}}', "event.type must be an integer"),
        ('{"type": 30016, "sn": false, "msg": {}}', "event.sn must be a string, not a boolean"),
        ('{"type": 30016, "msg": "not json"}', "30016 event.msg is not valid JSON"),
        ('{"type": 30016, "msg": "null"}', "30016 msg must be an object, not null"),
        ('{"type": NaN, "msg": {}}', "JSON constant NaN is not allowed"),
        ('{"errcode": "x"}', "ack.errcode must be an integer"),
        ('{"type": 1' + "9" * 5000 + ', "msg": {}}', "frame is not valid JSON"),
        ("[" * 30_000 + "]" * 30_000, "frame is nested too deeply"),
        ('"' + "a" * MAX_FRAME_BYTES + '"', f"frame is larger than {MAX_FRAME_BYTES} bytes"),
    ],
)
def test_malformed_frames(frame: str, message: str) -> None:
    assert message in error_of(frame)


def test_malformed_inputs_of_other_kinds() -> None:
    cyclic: dict[str, Any] = {"type": 30016}
    cyclic["msg"] = cyclic
    for data in (
        cyclic,
        {"type": 30016, "msg": object()},
        {"type": 1, "msg": float("nan")},
        b"\xff\xfe",
        42,
    ):
        with pytest.raises(EventError):
            parse_event(data)  # type: ignore[arg-type]
    with pytest.raises(EventError, match="frame must be text"):
        parse_frame(None)  # type: ignore[arg-type]


# --- properties: garbage only ever raises EventError --------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=30,
)
event_types = st.sampled_from([30016, 30011, 30012, "30016", 30008, -1, 2**70]) | st.integers()
# Field names the parser looks at, so random objects exercise the deep paths, not just the surface.
field_names = st.sampled_from(
    [
        "call_id",
        "members",
        "inbound",
        "outbound",
        "extension",
        "channel_id",
        "trunk_name",
        "from",
        "to",
        "member_status",
        "number",
        "status",
        "call_duration",
        "talk_duration",
        "type",
        "sn",
        "msg",
        "errcode",
        "errmsg",
    ]
)
shaped_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(field_names, children, max_size=6)
    ),
    max_leaves=40,
)
hypothesis_settings = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def check(outcome: Any) -> None:
    assert isinstance(
        outcome,
        IncomingCall
        | CallStateChanged
        | CallDetailRecord
        | OtherEvent
        | HeartbeatResponse
        | SubscribeAck,
    )


def parse_or_event_error(function: Any, data: Any) -> None:
    try:
        outcome = function(data)
    except EventError:
        return
    check(outcome)


@hypothesis_settings
@given(st.text(max_size=200))
def test_random_text_only_raises_event_error(text: str) -> None:
    parse_or_event_error(parse_frame, text)
    parse_or_event_error(parse_event, text)


@hypothesis_settings
@given(st.binary(max_size=200))
def test_random_bytes_only_raises_event_error(data: bytes) -> None:
    parse_or_event_error(parse_event, data)
    parse_or_event_error(parse_frame, data)


@hypothesis_settings
@given(json_values)
def test_random_json_only_raises_event_error(value: Any) -> None:
    parse_or_event_error(parse_frame, json.dumps(value))
    if isinstance(value, dict):
        parse_or_event_error(parse_event, value)


@hypothesis_settings
@given(event_types, shaped_values | json_values, st.booleans(), st.text(max_size=8) | json_values)
def test_envelopes_with_random_msg_only_raise_event_error(
    event_type: Any, msg: Any, as_text: bool, sn: Any
) -> None:
    frame = json.dumps({"type": event_type, "sn": sn, "msg": json.dumps(msg) if as_text else msg})
    parse_or_event_error(parse_frame, frame)
    parse_or_event_error(parse_event, {"type": event_type, "sn": sn, "msg": msg})


@hypothesis_settings
@given(
    st.sampled_from(["from", "to", "trunk_name", "channel_id", "member_status", "call_path"]),
    shaped_values,
)
def test_30016_with_one_field_replaced_only_raises_event_error(field: str, value: Any) -> None:
    frame = envelope(30016, incoming(**{field: value}))
    try:
        event = parse_frame(frame)
    except EventError:
        return
    assert isinstance(event, IncomingCall)
    # Whatever got through is a bounded, trimmed string.
    for text in (event.call_id, event.channel_id, event.caller, event.called, event.trunk_name):
        assert isinstance(text, str)
        assert len(text) <= MAX_FIELD_CHARS
        assert text == text.strip()
    assert event.channel_id
    assert event.trunk_name
