"""Calls of the simulated Yeastar PBX (see ``simulator.py``): who calls, and what happens next.

The trunks the fake PBX owns, a pool of realistic caller numbers, the per-call record, the ``msg``
bodies of events 30016, 30011 and 30012 (docs/pbx.md-§11), and ``CallBook``, which holds each
call through the inbound window, routes it, ends it and generates new ones. It knows nothing of
HTTP: events leave through the ``emit`` callback the simulator passes in.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Call outcomes as the control API reports them (GET /_sim/calls/<id>).
PENDING = "pending"
ACCEPTED = "accepted"
REFUSED = "refused"
AUTO_ACCEPTED = "auto_accepted"
HUNG_UP = "hung_up"
# The trunk's Control Inbound Call is off at the PBX: no hold and no 30016, the call is routed at
# once and nobody is asked (pbxscreen cannot see it coming).
NOT_HELD = "not_held"

# Where the call is now: held in the inbound window, ringing the extension, talking, or over.
HELD = "held"
RINGING = "ringing"
TALKING = "talking"
ENDED = "ended"

EVENT_CALL_STATE = 30011
EVENT_NEW_CDR = 30012
EVENT_INCOMING_CALL = 30016


@dataclass(frozen=True)
class Trunk:
    id: int
    name: str
    type: str
    host_port: str
    did: str
    extension: str  # where the inbound route sends the call once accepted
    status: int = 1  # 1 = idle (docs/pbx.md)

    def as_list_item(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "name": self.name,
            "type": self.type,
            "host_port": self.host_port,
            "def_outbound_cid": self.did,
        }


# Numbers come from Ofcom's ranges reserved for drama (07700 900xxx, 020 7946 0xxx,
# 0113/0161 496 0xxx), so nothing the demo shows can ring a real person.
TRUNKS: tuple[Trunk, ...] = (
    Trunk(1, "peer-to-41", "peer", "192.0.2.41:5060", "02079460000", "2002"),
    Trunk(2, "register-bt", "register", "sip.bt.example:5060", "01134960100", "2005"),
    Trunk(3, "sip-gamma", "register", "sip.gamma.example:5060", "01614960200", "6300"),
)
DEFAULT_EXTENSION = "2000"


def trunk_by_name(name: str) -> Trunk | None:
    return next((trunk for trunk in TRUNKS if trunk.name == name), None)


def fresh_caller(rng: random.Random) -> str:
    """One caller number in a spread of UK styles, sometimes withheld."""
    roll = rng.random()
    tail = rng.randrange(1000)
    if roll < 0.08:
        return "anonymous"
    if roll < 0.40:
        return f"07700900{tail:03d}"
    if roll < 0.55:
        return f"+447700900{tail:03d}"
    if roll < 0.75:
        return f"0207946{tail:04d}"
    if roll < 0.85:
        return f"+44207946{tail:04d}"
    return rng.choice(("01134960", "01614960")) + f"{tail:03d}"


@dataclass
class CallerPool:
    """About 30 % of generated calls come from a small set of regulars (repeat callers)."""

    rng: random.Random
    repeat_share: float = 0.3
    regulars: list[str] = field(default_factory=list)
    size: int = 6

    def __post_init__(self) -> None:
        while len(self.regulars) < self.size:
            number = fresh_caller(self.rng)
            if number != "anonymous" and number not in self.regulars:
                self.regulars.append(number)

    def next_caller(self) -> str:
        if self.rng.random() < self.repeat_share:
            return self.rng.choice(self.regulars)
        return fresh_caller(self.rng)


@dataclass
class SimCall:
    call_id: str
    channel_id: str
    caller: str
    called: str
    trunk_name: str
    extension: str
    extension_channel: str
    offered_at: float  # epoch seconds
    outcome: str = PENDING
    decided_at: float | None = None
    state: str = HELD
    answered_at: float | None = None
    ended_at: float | None = None
    envelope: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "channel_id": self.channel_id,
            "from": self.caller,
            "to": self.called,
            "trunk_name": self.trunk_name,
            "offered_at": self.offered_at,
            "outcome": self.outcome,
            "decided_at": self.decided_at,
            "state": self.state,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
        }


class CallIds:
    """Asterisk-style identifiers: ``<epoch>.<seq>`` call ids and hex-numbered channels."""

    def __init__(self, rng: random.Random) -> None:
        self._seq = rng.randrange(100, 900)
        self._channel = rng.randrange(0x40, 0x400)

    def call_id(self) -> str:
        self._seq += 1
        return f"{int(time.time())}.{self._seq}"

    def channel(self, prefix: str) -> str:
        self._channel += 1
        return f"{prefix}-{self._channel:08x}"


def inbound_member(call: SimCall, status: str) -> dict[str, Any]:
    return {
        "inbound": {
            "from": call.caller,
            "to": call.called,
            "trunk_name": call.trunk_name,
            "channel_id": call.channel_id,
            "member_status": status,
            "call_path": "",
        }
    }


def extension_member(call: SimCall, status: str) -> dict[str, Any]:
    return {
        "extension": {
            "number": call.extension,
            "channel_id": call.extension_channel,
            "member_status": status,
            "call_path": "",
        }
    }


def call_msg(call: SimCall, inbound_status: str, extension_status: str | None = None) -> dict:
    """The ``{call_id, members}`` body shared by 30016, 30011 and call/query."""
    members = [inbound_member(call, inbound_status)]
    if extension_status is not None:
        members.append(extension_member(call, extension_status))
    return {"call_id": call.call_id, "members": members}


def cdr_msg(call: SimCall, serial: str) -> dict[str, Any]:
    """30012 body. Blank strings are ``" "`` as in the doc example (docs/pbx.md)."""
    ended = call.ended_at or time.time()
    answered = call.answered_at is not None
    talk = round(ended - call.answered_at) if call.answered_at is not None else 0
    start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(call.offered_at))
    recording = (
        f"{time.strftime('%Y%m%d%H%M%S', time.localtime(call.answered_at))}-{call.call_id}"
        f"-{call.caller}-{call.extension}-Inbound.wav"
        if call.answered_at is not None
        else ""
    )
    return {
        "call_id": call.call_id,
        "time_start": start,
        "call_from": call.caller,
        "call_to": call.extension if answered else call.called,
        "call_duration": round(ended - call.offered_at),
        "talk_duration": talk,
        "src_trunk_name": call.trunk_name,
        "dst_trunk_name": " ",
        "pin_code": " ",
        # The CDR status of a refused call is unconfirmed (docs/pbx.md); NO ANSWER is our guess.
        "status": "ANSWERED" if answered else "NO ANSWER",
        "type": "Inbound",
        "recording": recording,
        "did_number": call.called,
        "did_name": "",
        "agent_ring_time": 0,
        "uid": f"{time.strftime('%Y%m%d%H%M%S', time.localtime(ended))}{serial[-4:]}"
        f"{call.call_id.rsplit('.', 1)[-1]}",
    }


def search_record(record_id: int, call: SimCall, cdr: dict[str, Any]) -> dict[str, Any]:
    """The call as ``cdr/search`` lists it. The search's field names are unconfirmed
    (docs/outages.md): this picks the names ``cdr/list`` sorts by (``time``, ``disposition``,
    ``call_type``, ``src_trunk``, ``uid``…) and keeps the 30012's ``call_id`` (what a 30016 is
    matched on) and ``call_from``/``call_to`` (the search's own filter names). ``time`` is
    PBX-local, in this process's time zone, like the 30012's ``time_start``."""
    return {
        "id": record_id,
        "uid": cdr["uid"],
        "call_id": call.call_id,
        "time": cdr["time_start"],
        "call_from": cdr["call_from"],
        "call_to": cdr["call_to"],
        "duration": cdr["call_duration"],
        "ring_duration": max(0, cdr["call_duration"] - cdr["talk_duration"]),
        "talk_duration": cdr["talk_duration"],
        "disposition": cdr["status"],
        "call_type": cdr["type"],
        "src_trunk": cdr["src_trunk_name"],
        "dst_trunk": " ",
        "did_number": cdr["did_number"],
        "recording": cdr["recording"],
    }


def envelope(event_type: int, serial: str, msg: dict[str, Any]) -> dict[str, Any]:
    """The wire frame: ``msg`` is a JSON-encoded string, decoded a second time by clients."""
    return {"type": event_type, "sn": serial, "msg": json.dumps(msg, separators=(",", ":"))}


Emit = Callable[[int, dict[str, Any]], dict[str, Any]]
MAX_KEPT_CALLS = 20_000


@dataclass
class CallTimers:
    """What is scheduled for one call: the window, a caller hang-up, the routing task."""

    handles: list[asyncio.TimerHandle] = field(default_factory=list)
    routing: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()
        if self.routing is not None:
            self.routing.cancel()


class CallBook:
    """Every call the PBX has seen, driven through hold, decision, ringing, talk and CDR."""

    def __init__(
        self,
        *,
        rng: random.Random,
        emit: Emit,
        serial: str,
        window_seconds: float,
        ring_seconds: tuple[float, float],
        talk_seconds: tuple[float, float],
        answer_probability: float,
        hangup_probability: float,
        regular_callers: list[str] | None = None,
    ) -> None:
        self.rng = rng
        self.emit = emit
        self.serial = serial
        self.window_seconds = window_seconds
        self.ring_seconds = ring_seconds
        self.talk_seconds = talk_seconds
        self.answer_probability = answer_probability
        self.hangup_probability = hangup_probability
        self.calls: dict[str, SimCall] = {}
        self.by_channel: dict[str, SimCall] = {}
        # The PBX's call records (what cdr/search lists): one per ended call, oldest first, kept
        # whether or not anyone was subscribed when the call was offered.
        self.records: deque[tuple[float, dict[str, Any]]] = deque(maxlen=MAX_KEPT_CALLS)
        # Trunk Status Monitor settings; every trunk starts monitored and controlled.
        self.monitor = {t.id: {"enb_call_status": 1, "enb_control_inbound_call": 1} for t in TRUNKS}
        self._ids = CallIds(rng)
        self._timers: dict[str, CallTimers] = {}
        # Made here, not in generate(): the simulated company contacts reuse these numbers.
        self.callers = CallerPool(rng, regulars=list(regular_callers or []))

    def offer(
        self, caller: str, called: str, trunk_name: str, *, hangup_after: float | None = None
    ) -> SimCall:
        """A call arrives: on a trunk with Control Inbound Call on (or one the simulator does not
        own), hold it, emit 30016 and start the window; otherwise route it at once, unannounced."""
        trunk = trunk_by_name(trunk_name)
        extension = trunk.extension if trunk else DEFAULT_EXTENSION
        call = SimCall(
            call_id=self._ids.call_id(),
            channel_id=self._ids.channel(f"PJSIP/trunk-{trunk_name}-endpoint"),
            caller=caller,
            called=called,
            trunk_name=trunk_name,
            extension=extension,
            extension_channel=self._ids.channel(f"PJSIP/{extension}"),
            offered_at=time.time(),
        )
        self._forget_old_calls()
        self.calls[call.call_id] = call
        self.by_channel[call.channel_id] = call
        if not self.controls_inbound(trunk_name):
            self.decide(call, NOT_HELD)
            return call
        loop = asyncio.get_running_loop()
        timers = self._timers[call.call_id] = CallTimers()
        timers.handles.append(loop.call_later(self.window_seconds, self._window_expired, call))
        if hangup_after is not None:
            timers.handles.append(loop.call_later(hangup_after, self.hangup, call.call_id))
        call.envelope = self.emit(EVENT_INCOMING_CALL, call_msg(call, "ALERT"))
        return call

    def pending(self, channel_id: str) -> SimCall | None:
        """The held call on that channel, or None once it is decided, gone or never existed."""
        call = self.by_channel.get(channel_id)
        return call if call is not None and call.outcome == PENDING else None

    def decide(self, call: SimCall, outcome: str) -> None:
        timers = self._timers.setdefault(call.call_id, CallTimers())
        timers.cancel()
        call.outcome = outcome
        call.decided_at = time.time()
        if outcome in (ACCEPTED, AUTO_ACCEPTED, NOT_HELD):
            timers.routing = asyncio.ensure_future(self._ring_and_talk(call))
        else:
            self._end(call)

    def hangup(self, call_id: str) -> bool:
        """The caller hangs up: in the hold (outcome hung_up) or later (the call just ends)."""
        call = self.calls.get(call_id)
        if call is None or call.state == ENDED:
            return False
        if call.outcome == PENDING:
            self.decide(call, HUNG_UP)
        else:
            self._timers[call_id].cancel()
            self._end(call)
        return True

    def live(self) -> list[SimCall]:
        return [call for call in self.calls.values() if call.state != ENDED]

    def cancel_all(self) -> None:
        for timers in self._timers.values():
            timers.cancel()

    def call_status_monitored(self, trunk_name: str) -> bool:
        return self._monitored(trunk_name, "enb_call_status")

    def controls_inbound(self, trunk_name: str) -> bool:
        return self._monitored(trunk_name, "enb_control_inbound_call")

    def _monitored(self, trunk_name: str, flag: str) -> bool:
        # A trunk the monitor list does not hold has every monitoring off; a name the simulator
        # does not own (tests inject on made-up trunks) is taken as fully monitored.
        trunk = trunk_by_name(trunk_name)
        return trunk is None or bool(self.monitor.get(trunk.id, {}).get(flag))

    async def generate(self, call_rate: float) -> None:
        """Poisson arrivals at ``call_rate`` per second, some callers hanging up during the hold."""
        callers = self.callers
        while True:
            await asyncio.sleep(self.rng.expovariate(call_rate))
            # Calls on trunks without Control Inbound Call are never held nor offered: skip them.
            trunks = [t for t in TRUNKS if self.controls_inbound(t.name)]
            if not trunks:
                continue
            trunk = self.rng.choice(trunks)
            hangup_after = None
            if self.rng.random() < self.hangup_probability:
                hangup_after = self.rng.uniform(0.1, 0.95) * self.window_seconds
            self.offer(callers.next_caller(), trunk.did, trunk.name, hangup_after=hangup_after)

    def _forget_old_calls(self) -> None:
        """Bound memory on long benchmark runs by dropping the oldest ended calls."""
        if len(self.calls) < MAX_KEPT_CALLS:
            return
        for call in [c for c in self.calls.values() if c.state == ENDED][: MAX_KEPT_CALLS // 10]:
            del self.calls[call.call_id]
            self.by_channel.pop(call.channel_id, None)
            self._timers.pop(call.call_id, None)

    def _window_expired(self, call: SimCall) -> None:
        if call.outcome == PENDING:  # fail-open: nobody decided, the PBX routes the call itself
            self.decide(call, AUTO_ACCEPTED)

    async def _ring_and_talk(self, call: SimCall) -> None:
        call.state = RINGING
        self._emit_call_state(call, "ALERT", "RING")
        await asyncio.sleep(self.rng.uniform(*self.ring_seconds))
        if self.rng.random() < self.answer_probability:
            call.state = TALKING
            call.answered_at = time.time()
            self._emit_call_state(call, "ANSWERED", "ANSWER")
            await asyncio.sleep(self.rng.uniform(*self.talk_seconds))
        self._end(call)

    def _end(self, call: SimCall) -> None:
        reached_extension = call.state in (RINGING, TALKING)
        call.state = ENDED
        call.ended_at = time.time()
        self._emit_call_state(call, "BYE", "BYE" if reached_extension else None)
        cdr = cdr_msg(call, self.serial)
        self.records.append((call.offered_at, search_record(len(self.records) + 1, call, cdr)))
        self.emit(EVENT_NEW_CDR, cdr)

    def search_records(self, start: float, end: float) -> list[dict[str, Any]]:
        """The records of the calls that started in [start, end] (epoch seconds), by start (they
        are kept in the order the calls ended)."""
        found = [(started, record) for started, record in self.records if start <= started <= end]
        return [record for _, record in sorted(found, key=lambda item: item[0])]

    def _emit_call_state(self, call: SimCall, inbound: str, extension: str | None) -> None:
        # 30011 for trunk calls needs Call Status monitoring on the trunk (docs/pbx.md).
        if self.call_status_monitored(call.trunk_name):
            self.emit(EVENT_CALL_STATE, call_msg(call, inbound, extension))


def live_msg(call: SimCall) -> dict[str, Any]:
    """The call as call/query shows it right now."""
    if call.state == TALKING:
        return call_msg(call, "ANSWERED", "ANSWER")
    if call.state == RINGING:
        return call_msg(call, "ALERT", "RING")
    return call_msg(call, "ALERT")
