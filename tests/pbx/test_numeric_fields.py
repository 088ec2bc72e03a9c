"""Numbers where the documentation says String: every text field the parser reads, in 30016,
30011 and 30012, walked one at a time.

The P-Series pages type numbers and ids as String, some older pages as Integer. A field sent as a
JSON number is the same call as that field sent as text (a number written 1648861726.280 keeps
its trailing zero, or its 30011/30012 would not match its 30016). Booleans, objects and arrays
are still refused, with the field named.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from screening.models import Call
from screening.pbx.events import CallDetailRecord, Event, EventError, parse_frame
from tests.pbx.test_events import DOC_30011_MSG, DOC_30012_MSG, DOC_30016_MSG
from tests.pbx.test_webhook import SECRET, post, sign

OUTBOUND_30011: dict[str, Any] = {
    "call_id": "1648861726.281",
    "members": [
        {
            "outbound": {
                "from": "2002",
                "to": "5550",
                "trunk_name": "peer-to-41",
                "channel_id": "PJSIP/trunk-peer-to-41-endpoint-000000c1",
                "member_status": "EARLYMEDIA",
                "call_path": "",
            }
        }
    ],
}
EXAMPLES = [(30016, DOC_30016_MSG), (30011, DOC_30011_MSG), (30011, OUTBOUND_30011)]
EXAMPLES.append((30012, DOC_30012_MSG))
MARK = "@@field under test@@"
# Written into the JSON text as is: an integer, a long one, and a call id with a trailing zero.
NUMBERS = ("5503301", "447700900123000", "1648861726.280")


def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every string in a documented message."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    elif isinstance(value, str):
        yield path


def replaced(msg: Any, path: tuple[Any, ...], value: Any) -> Any:
    copy = json.loads(json.dumps(msg))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def frame(
    event_type: int, msg: Any, literal: str | None = None, *, sn: Any = "3631A2124XXX"
) -> str:
    """A wire frame (msg as JSON text, as the PBX sends call events); ``literal`` is written
    raw in place of the marked field."""
    text = json.dumps(msg)
    if literal is not None:
        text = text.replace(json.dumps(MARK), literal)
    return json.dumps({"type": event_type, "sn": sn, "msg": text})


def comparable(event: Event) -> Event:
    # A CDR keeps the whole record as sent for the audit: there the number stays a number.
    return dataclasses.replace(event, raw={}) if isinstance(event, CallDetailRecord) else event


def read_fields() -> list[tuple[int, dict[str, Any], tuple[Any, ...]]]:
    """Every (event, field) the parser reads: changing its text changes what the parser returns."""
    found = []
    for event_type, msg in EXAMPLES:
        original = comparable(parse_frame(frame(event_type, msg)))
        for path in leaves(msg):
            changed = parse_frame(frame(event_type, replaced(msg, path, "9876")))
            if comparable(changed) != original:
                found.append((event_type, msg, path))
    return found


READ = read_fields()


def test_the_walk_covers_every_field_the_parser_reads() -> None:
    walked = {(event_type, path[-1]) for event_type, _msg, path in READ}
    assert walked == {
        (30016, "call_id"),
        *((30016, k) for k in ("from", "to", "trunk_name", "channel_id", "member_status")),
        (30011, "call_id"),
        *((30011, k) for k in ("from", "to", "trunk_name", "channel_id", "member_status")),
        (30011, "number"),  # the extension member's
        *((30012, k) for k in ("call_id", "call_from", "call_to", "src_trunk_name", "did_number")),
        *((30012, k) for k in ("status", "time_start", "type")),
    }


@pytest.mark.parametrize(
    ("event_type", "msg", "path"), READ, ids=[f"{t}-{'.'.join(map(str, p))}" for t, _, p in READ]
)
def test_a_number_reads_as_the_same_text(
    event_type: int, msg: dict[str, Any], path: tuple[Any, ...]
) -> None:
    for number in NUMBERS:
        as_text = parse_frame(frame(event_type, replaced(msg, path, number)))
        as_number = parse_frame(frame(event_type, replaced(msg, path, MARK), number))
        assert comparable(as_number) == comparable(as_text), (path, number)


@pytest.mark.parametrize(
    ("event_type", "msg", "path"), READ, ids=[f"{t}-{'.'.join(map(str, p))}" for t, _, p in READ]
)
def test_booleans_objects_and_arrays_are_still_refused(
    event_type: int, msg: dict[str, Any], path: tuple[Any, ...]
) -> None:
    for value, kind in ((True, "a boolean"), ({"n": 1}, "an object"), ([1], "an array")):
        with pytest.raises(EventError) as refused:
            parse_frame(frame(event_type, replaced(msg, path, value)))
        assert f".{path[-1]} must be a string, not {kind}" in str(refused.value)


def test_the_serial_number_as_a_number() -> None:
    event = parse_frame(frame(30016, DOC_30016_MSG, sn=3631212400))
    assert event.sn == "3631212400"


@override_settings(PBX_WEBHOOK_SECRET=SECRET)
@pytest.mark.django_db(transaction=True)
def test_a_call_with_numeric_fields_is_screened_and_a_boolean_one_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inbound = {
        "from": MARK,
        "to": 2002,
        "trunk_name": "peer-to-41",
        "channel_id": "PJSIP/trunk-peer-to-41-endpoint-000000d7",
        "member_status": "ALERT",
    }
    msg = {"call_id": "1648861726.290", "members": [{"inbound": inbound}]}
    body = frame(30016, msg, "447700900123").encode()
    assert post(body, sign(body)).status_code == 200
    call = Call.objects.get(pbx_call_id="1648861726.290")
    assert (call.caller, call.called, call.status) == ("447700900123", "2002", "pending")

    inbound["from"] = True
    bad = frame(30016, {**msg, "call_id": "1648861726.291"}).encode()
    with caplog.at_level(logging.WARNING, logger="screening"):
        assert post(bad, sign(bad)).status_code == 400
    assert "30016 msg.members[0].inbound.from must be a string, not a boolean" in caplog.text
    assert not Call.objects.filter(pbx_call_id="1648861726.291").exists()
