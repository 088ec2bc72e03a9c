"""Parse and validate Yeastar P-Series event frames into typed objects.

This module is the one place that knows the wire format (docs/pbx.md). Everything that
comes from the PBX (WebSocket text frames, webhook bodies) goes through :func:`parse_frame` or
:func:`parse_event`, and anything malformed raises :class:`EventError` and nothing else, so the
listener can log the frame and carry on.

Kept strings are trimmed (the PBX sends blanks as ``" "``) and free of control characters and lone
surrogates (PostgreSQL rejects NUL and SQLite/psycopg cannot encode surrogates). Each is bounded by
its field's limit below, which is also the width of the column that stores it, so whatever this
module lets through can be stored: a longer value is kept shortened, and the event carries the
original (``clipped``) for the audit trail. A call with an odd field is still screened; only a
channel id too long to keep is refused, because the PBX needs it back exactly to accept or refuse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

MAX_FRAME_BYTES = 64 * 1024

# The longest value kept of each field. screening.models declares the columns that store these
# fields with the same constants: one number per field, from the wire to the database.
CALL_ID_CHARS = 64  # Call.pbx_call_id; 30011/30012 are matched on the same shortened id
CHANNEL_ID_CHARS = 256  # Call.channel_id; never shortened (the PBX needs it back exactly)
SN_CHARS = 64  # Call.pbx_sn
NUMBER_CHARS = 64  # Call.caller, Call.called, and every other number the PBX sends
TRUNK_NAME_CHARS = 128  # Trunk.name (and Trunk.label, which starts as the name)
MAX_FIELD_CHARS = 256  # any other kept string (statuses, times): the audit trail's detail only
# Event durations and IDs fit comfortably; anything larger is garbage (and would overflow a
# PostgreSQL integer column).
MAX_INT = 2**31 - 1

INCOMING_CALL = 30016
CALL_STATE_CHANGED = 30011
NEW_CDR = 30012

HEARTBEAT_RESPONSE = "heartbeat response"
MEMBER_KINDS = ("inbound", "outbound", "extension")


class EventError(ValueError):
    """A frame or event that does not have the documented shape; the message says what is wrong."""


def as_sent(event: Any) -> dict[str, dict[str, str]]:
    """Audit detail keeping the fields the parser shortened to fit, as the PBX sent them."""
    return {"clipped": dict(event.clipped)} if event.clipped else {}


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """30016 Incoming Call Request: the PBX holds the call up to 10 s for accept/refuse."""

    call_id: str
    channel_id: str
    caller: str  # may be "" (withheld caller ID)
    called: str
    trunk_name: str
    sn: str
    member_status: str
    # (field path, value as sent) of every field kept shortened to its limit, for the audit.
    clipped: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class CallMember:
    kind: str  # "inbound" | "outbound" | "extension"
    channel_id: str
    member_status: str
    number: str  # extension number, or ""
    caller: str  # "" where not applicable (extension members)
    called: str
    trunk_name: str


@dataclass(frozen=True, slots=True)
class CallStateChanged:
    """30011 Call State Changed."""

    call_id: str
    sn: str
    members: tuple[CallMember, ...]
    clipped: tuple[tuple[str, str], ...] = ()  # as on IncomingCall


@dataclass(frozen=True, slots=True)
class CallDetailRecord:
    """30012 New CDR, sent when a call ends."""

    call_id: str
    sn: str
    status: str  # upper-case: the EN doc table misspells ANSWERD, examples use ANSWERED
    call_from: str
    call_to: str
    call_duration: int
    talk_duration: int
    src_trunk_name: str
    did_number: str
    time_start: str  # PBX-local time as sent, e.g. "2022-04-27 19:04:36"
    call_type: str  # "Inbound" / "inbound" … as sent (the doc disagrees with itself on case)
    raw: Mapping[str, Any]
    clipped: tuple[tuple[str, str], ...] = ()  # as on IncomingCall


@dataclass(frozen=True, slots=True)
class OtherEvent:
    """Any other event type, passed through with its decoded ``msg``."""

    type: int
    sn: str
    msg: Any
    clipped: tuple[tuple[str, str], ...] = ()  # as on IncomingCall (only the sn is read)


Event: TypeAlias = IncomingCall | CallStateChanged | CallDetailRecord | OtherEvent


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    """The literal ``heartbeat response`` text frame (not JSON)."""


@dataclass(frozen=True, slots=True)
class SubscribeAck:
    """The answer to ``{"topic_list": [...]}``; errcode 0 means subscribed."""

    errcode: int
    errmsg: str


Frame: TypeAlias = HeartbeatResponse | SubscribeAck | Event


# --- JSON decoding ------------------------------------------------------------------------------


class _JsonFloat(float):
    """A JSON number with a fraction or exponent that remembers how it was written: a call id
    sent as the number 1648861726.280 must read "1648861726.280", as the same id sent as text
    does in the call's other events, not Python's "1648861726.28"."""

    text: str

    def __new__(cls, literal: str) -> _JsonFloat:
        number = super().__new__(cls, literal)
        number.text = literal
        return number


def _number_text(value: float) -> str:
    """A JSON number as the text the PBX wrote (integers exactly; see _JsonFloat)."""
    return getattr(value, "text", None) or str(value)


def _reject_constant(name: str) -> Any:
    raise EventError(f"JSON constant {name} is not allowed")


def _loads(text: str | bytes, what: str) -> Any:
    """Decode JSON with the size bound, turning every decoder failure into EventError."""
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_FRAME_BYTES:
            raise EventError(f"{what} is larger than {MAX_FRAME_BYTES} bytes")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise EventError(f"{what} is not valid UTF-8") from None
    elif len(text) > MAX_FRAME_BYTES or len(text.encode("utf-8", "surrogatepass")) > (
        MAX_FRAME_BYTES
    ):
        raise EventError(f"{what} is larger than {MAX_FRAME_BYTES} bytes")
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_JsonFloat)
    except EventError:
        raise
    except RecursionError:
        raise EventError(f"{what} is nested too deeply") from None
    except ValueError as exc:
        # JSONDecodeError, and the int-digit limit of Python 3.11 for huge numbers.
        raise EventError(f"{what} is not valid JSON ({str(exc)[:80]})") from None


def _normalise_mapping(data: Mapping[Any, Any]) -> Any:
    """Round-trip an already-decoded mapping through JSON, so it obeys the same rules as text."""
    try:
        text = json.dumps(dict(data), allow_nan=False)
    except RecursionError:
        raise EventError("event is nested too deeply") from None
    except Exception as exc:  # TypeError, ValueError (cycles, NaN), or a broken Mapping
        raise EventError(f"event is not JSON-compatible ({str(exc)[:80]})") from None
    return _loads(text, "event")


# --- field helpers ------------------------------------------------------------------------------


class _Fields:
    """Reads the string fields of one event, keeping the original of each one it shortens."""

    def __init__(self) -> None:
        self.clipped: list[tuple[str, str]] = []

    def text(
        self,
        obj: Mapping[str, Any],
        key: str,
        where: str,
        *,
        limit: int = MAX_FIELD_CHARS,
        required: bool = False,
        upper: bool = False,
        exact: bool = False,
    ) -> str:
        """A trimmed string field, shortened to ``limit`` (``exact``: refused instead).

        ``required`` means present and non-blank; otherwise it defaults to ''. A JSON number is
        taken as the text it was written as: the P-Series pages type numbers and ids as String,
        some older pages as Integer, so the PBX may send either (unconfirmed which). Booleans,
        null, objects and arrays stay refused. ``upper`` upper-cases before shortening, since
        upper-casing can lengthen a string ("ß" → "SS").
        """
        path = f"{where}.{key}"
        if key not in obj:
            if required:
                raise EventError(f"{path} is missing")
            return ""
        sent = obj[key]
        if isinstance(sent, int | float) and not isinstance(sent, bool):
            sent = _number_text(sent)
        if not isinstance(sent, str):
            raise EventError(f"{path} must be a string, not {_kind(sent)}")
        _check_characters(sent, path)
        value = sent.strip()
        if upper:
            value = value.upper()
        if required and not value:
            raise EventError(f"{path} is empty")
        if len(value) > limit:
            if exact:
                raise EventError(
                    f"{path} is longer than {limit} characters; it cannot be kept shortened "
                    "because the PBX needs it back exactly"
                )
            self.clipped.append((path, sent))
            value = shortened(value, limit)
        return value


def shortened(value: str, limit: int) -> str:
    """``value`` trimmed and cut to ``limit`` characters, as the parser keeps a long field."""
    return value.strip()[:limit].rstrip()


def _check_characters(value: str, where: str) -> None:
    for ch in value:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            raise EventError(f"{where} contains a control character or lone surrogate")


def _int(value: Any, path: str, *, minimum: int = 0) -> int:
    """An integer, tolerating numeric strings ("24") and integral floats (24.0)."""
    if isinstance(value, bool):
        raise EventError(f"{path} must be an integer, not a boolean")
    if isinstance(value, float):
        if not value.is_integer():
            raise EventError(f"{path} must be an integer, not {value!r}")
        value = int(value)
    elif isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        if not digits or len(digits) > 12 or not (digits.isascii() and digits.isdigit()):
            raise EventError(f"{path} must be an integer, not {value[:40]!r}")
        value = int(text)
    elif not isinstance(value, int):
        raise EventError(f"{path} must be an integer, not {_kind(value)}")
    if not minimum <= value <= MAX_INT:
        raise EventError(f"{path} is out of range ({minimum}..{MAX_INT})")
    return value


def _opt_int(obj: Mapping[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0  # absent or blank: the PBX sends blanks as " "
    return _int(value, f"{where}.{key}")


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EventError(f"{path} must be an object, not {_kind(value)}")
    return value


def _list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    path = f"{where}.{key}"
    if key not in obj:
        raise EventError(f"{path} is missing")
    value = obj[key]
    if not isinstance(value, list):
        raise EventError(f"{path} must be an array, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


# --- events -------------------------------------------------------------------------------------


def parse_event(data: str | bytes | Mapping[str, Any]) -> Event:
    """Parse a ``{type, sn, msg}`` envelope (docs/pbx.md); raises only :class:`EventError`."""
    if isinstance(data, str | bytes | bytearray):
        envelope = _loads(data, "event")
    elif isinstance(data, Mapping):
        envelope = _normalise_mapping(data)
    else:
        raise EventError(f"event must be text or an object, not {_kind(data)}")
    return _parse_envelope(envelope)


def _parse_envelope(value: Any) -> Event:
    envelope = _obj(value, "event")
    if "type" not in envelope:
        raise EventError("event.type is missing")
    event_type = _int(envelope["type"], "event.type")
    fields = _Fields()
    # sn is documented on every envelope; tolerate its absence (webhook bodies are unconfirmed).
    sn = fields.text(envelope, "sn", "event", limit=SN_CHARS)
    if "msg" not in envelope:
        raise EventError(f"{event_type} event.msg is missing")
    msg = envelope["msg"]
    # Call events carry msg as JSON text to be parsed a second time; newer events send an object.
    if isinstance(msg, str):
        msg = _loads(msg, f"{event_type} event.msg")
    if event_type == INCOMING_CALL:
        return _incoming_call(_obj(msg, "30016 msg"), sn, fields)
    if event_type == CALL_STATE_CHANGED:
        return _call_state_changed(_obj(msg, "30011 msg"), sn, fields)
    if event_type == NEW_CDR:
        return _cdr(_obj(msg, "30012 msg"), sn, fields)
    return OtherEvent(type=event_type, sn=sn, msg=msg, clipped=tuple(fields.clipped))


def _incoming_call(msg: dict[str, Any], sn: str, fields: _Fields) -> IncomingCall:
    call_id = fields.text(msg, "call_id", "30016 msg", limit=CALL_ID_CHARS, required=True)
    members = _list(msg, "members", "30016 msg")
    for index, member in enumerate(members):
        where = f"30016 msg.members[{index}]"
        member = _obj(member, where)
        if "inbound" not in member:
            continue
        where += ".inbound"
        inbound = _obj(member["inbound"], where)
        return IncomingCall(
            call_id=call_id,
            channel_id=fields.text(
                inbound, "channel_id", where, limit=CHANNEL_ID_CHARS, required=True, exact=True
            ),
            caller=fields.text(inbound, "from", where, limit=NUMBER_CHARS),
            called=fields.text(inbound, "to", where, limit=NUMBER_CHARS),
            trunk_name=fields.text(
                inbound, "trunk_name", where, limit=TRUNK_NAME_CHARS, required=True
            ),
            sn=sn,
            member_status=fields.text(inbound, "member_status", where, upper=True),
            clipped=tuple(fields.clipped),
        )
    raise EventError("30016 msg.members has no inbound member")


def _call_state_changed(msg: dict[str, Any], sn: str, fields: _Fields) -> CallStateChanged:
    call_id = fields.text(msg, "call_id", "30011 msg", limit=CALL_ID_CHARS, required=True)
    parsed: list[CallMember] = []
    for index, member in enumerate(_list(msg, "members", "30011 msg")):
        where = f"30011 msg.members[{index}]"
        member = _obj(member, where)
        kind = next((k for k in MEMBER_KINDS if k in member), None)
        if kind is None:
            raise EventError(f"{where} has none of {', '.join(MEMBER_KINDS)}")
        where += f".{kind}"
        info = _obj(member[kind], where)
        channel_id = fields.text(
            info, "channel_id", where, limit=CHANNEL_ID_CHARS, required=True, exact=True
        )
        status = fields.text(info, "member_status", where, required=True, upper=True)
        if kind == "extension":
            number = fields.text(info, "number", where, limit=NUMBER_CHARS)
            caller = called = trunk_name = ""
        else:
            number = ""
            caller = fields.text(info, "from", where, limit=NUMBER_CHARS)
            called = fields.text(info, "to", where, limit=NUMBER_CHARS)
            trunk_name = fields.text(info, "trunk_name", where, limit=TRUNK_NAME_CHARS)
        parsed.append(
            CallMember(
                kind=kind,
                channel_id=channel_id,
                member_status=status,
                number=number,
                caller=caller,
                called=called,
                trunk_name=trunk_name,
            )
        )
    return CallStateChanged(
        call_id=call_id, sn=sn, members=tuple(parsed), clipped=tuple(fields.clipped)
    )


def _cdr(msg: dict[str, Any], sn: str, fields: _Fields) -> CallDetailRecord:
    where = "30012 msg"
    return CallDetailRecord(
        call_id=fields.text(msg, "call_id", where, limit=CALL_ID_CHARS, required=True),
        sn=sn,
        status=fields.text(msg, "status", where, required=True, upper=True),
        call_from=fields.text(msg, "call_from", where, limit=NUMBER_CHARS),
        call_to=fields.text(msg, "call_to", where, limit=NUMBER_CHARS),
        call_duration=_opt_int(msg, "call_duration", where),
        talk_duration=_opt_int(msg, "talk_duration", where),
        src_trunk_name=fields.text(msg, "src_trunk_name", where, limit=TRUNK_NAME_CHARS),
        did_number=fields.text(msg, "did_number", where, limit=NUMBER_CHARS),
        time_start=fields.text(msg, "time_start", where),
        call_type=fields.text(msg, "type", where),
        # The whole record (bounded by the frame size) for the audit trail. A plain dict, not a
        # read-only proxy: it must stay JSON-serialisable for a JSONField and picklable.
        raw=msg,
        clipped=tuple(fields.clipped),
    )


# --- WebSocket frames ---------------------------------------------------------------------------


def parse_frame(text: str | bytes) -> Frame:
    """Classify a WebSocket text frame: heartbeat answer, subscribe ack, or an event envelope."""
    if not isinstance(text, str | bytes | bytearray):
        raise EventError(f"frame must be text, not {_kind(text)}")
    if isinstance(text, str) and len(text) <= 64 and text.strip() == HEARTBEAT_RESPONSE:
        return HeartbeatResponse()
    if isinstance(text, bytes | bytearray) and text.strip() == HEARTBEAT_RESPONSE.encode():
        return HeartbeatResponse()
    value = _loads(text, "frame")
    if isinstance(value, dict) and "errcode" in value and "type" not in value:
        errcode = _int(value["errcode"], "ack.errcode", minimum=-MAX_INT)
        return SubscribeAck(errcode=errcode, errmsg=_Fields().text(value, "errmsg", "ack"))
    return _parse_envelope(value)
