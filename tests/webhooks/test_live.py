"""Webhooks from a real `manage.py serve` process (its own sender thread) to a real local HTTP
receiver, with calls from the PBX simulator and decisions over HTTP: every event type, in order per
call; the receiver down for 30 s; a receiver that hangs while intake and decisions go on."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from screening.models import Call, DeliveryState, WebhookDelivery, WebhookEndpoint
from tests.conftest import LiveFactory
from tests.support.calls import arrived
from tests.support.live import make_user, session_for, wait_for
from tests.webhooks.conftest import SECRET
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.live

FINAL = ("accepted", "refused", "expired", "gone", "failed")
# Retries in tenths of seconds, not the production minutes, so the tests wait for little.
FAST = {
    "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
    "WEBHOOK_RETRY_CAP_SECONDS": "1.0",
    "WEBHOOK_POLL_SECONDS": "0.2",
}


def _by_call(events: list[dict[str, Any]]) -> dict[int | None, list[dict[str, Any]]]:
    per: dict[int | None, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        per[event["data"].get("call_id")].append(event)
    return per


def _assert_complete_and_in_order(receiver: Receiver) -> list[dict[str, Any]]:
    """Every outbox row reached the receiver, signed; none twice (by id, once delivered) and each
    call's events first arrived in the order they were written."""
    assert all(r.verified(SECRET) for r in receiver.received)
    events = receiver.events()
    first: dict[str, dict[str, Any]] = {}
    for event in events:
        first.setdefault(event["id"], event)
    rows = list(WebhookDelivery.objects.order_by("pk"))
    assert {str(r.event_id) for r in rows} == set(first)
    assert all(r.state == DeliveryState.DELIVERED for r in rows)
    for call_id, got in _by_call(list(first.values())).items():
        if call_id is None:
            continue
        written = [str(r.event_id) for r in rows if r.call_id == call_id]
        assert [e["id"] for e in got] == written, f"call {call_id} out of order"
    return list(first.values())


def test_every_event_type_reaches_the_receiver_signed_and_in_order_per_call(
    live_factory: LiveFactory, receiver: Receiver, endpoint: WebhookEndpoint
) -> None:
    live = live_factory(**FAST)  # the endpoint exists first: the link coming up is an event
    http = session_for(live.server, make_user("olivia", first_name="Olivia"))

    accepted = arrived(live.sim.inject("07700900001"))
    assert http.post(f"{live.url}/calls/{accepted.pk}/accept", timeout=10).status_code == 200
    refused = arrived(live.sim.inject("07700900002"))
    answer = http.post(f"{live.url}/calls/{refused.pk}/refuse", {"reason": "spam"}, timeout=10)
    assert answer.status_code == 200, answer.text
    sent = live.sim.inject("07700900003")
    gone = arrived(sent)
    live.sim.hangup(sent["call_id"])
    expired = arrived(live.sim.inject("07700900004"))  # nobody decides it
    pks = [accepted.pk, refused.pk, gone.pk, expired.pk]
    wait_for(
        lambda: Call.objects.filter(pk__in=pks, status__in=FINAL).count() == 4,
        timeout=30,
        what="every call to end",
    )
    # Each call's events, at least (the PBX's reports add call.outcome_confirmed as they come:
    # routed, then answered or not; a refusal's reason comes as a second call.decided).
    types = {
        accepted.pk: Counter({"call.received": 1, "call.decided": 1, "call.outcome_confirmed": 1}),
        refused.pk: Counter({"call.received": 1, "call.decided": 2}),
        gone.pk: Counter({"call.received": 1, "call.gone": 1}),
        expired.pk: Counter({"call.received": 1, "call.expired": 1}),
    }

    def got() -> dict[int | None, list[str]]:
        return {pk: [e["type"] for e in evs] for pk, evs in _by_call(receiver.events()).items()}

    def arrived_all() -> bool:
        now = got()
        return bool(now.get(None)) and all(
            not (want - Counter(now.get(pk, []))) for pk, want in types.items()
        )

    try:
        wait_for(arrived_all, timeout=30, what=f"the events {types}")
    except AssertionError:
        raise AssertionError(f"got {got()}; server log:\n{live.server.log()[-3000:]}") from None
    wait_for(
        lambda: not WebhookDelivery.objects.exclude(state=DeliveryState.DELIVERED).exists(),
        timeout=30,
        what="the outbox drained",
    )
    events = _assert_complete_and_in_order(receiver)
    per = _by_call(events)
    decided = next(e["data"] for e in per[accepted.pk] if e["type"] == "call.decided")
    assert decided["status"] == "accepted"
    assert decided["decision"] == "accept"
    assert decided["decided_by"]["kind"] == "operator"
    assert decided["decided_by"]["username"] == "olivia"
    assert decided["decided_by"]["name"] == "Olivia"
    assert decided["trunk"] == "peer-to-41"
    assert decided["caller"] == "07700900001"
    for pk in types:
        assert per[pk][0]["type"] == "call.received"
    confirmed = [e["data"] for e in per[accepted.pk] if e["type"] == "call.outcome_confirmed"]
    assert confirmed[-1]["pbx_outcome"] in {"routed", "answered", "no_answer"}
    assert confirmed[-1]["outcome_mismatch"] is False
    refusals = [e["data"] for e in per[refused.pk] if e["type"] == "call.decided"]
    assert [r["reason"] for r in refusals] == [None, "spam"]
    assert refusals[0]["decided_by"]["username"] == "olivia"
    ended = [e["data"] for e in per[expired.pk] if e["type"] == "call.expired"]
    assert ended[0]["decided_by"]["kind"] == "pbx_timeout"
    assert [e["type"] for e in per[gone.pk]][:2] == ["call.received", "call.gone"]
    link = [e["data"] for e in per[None]]
    assert {"state": "up", "previous_state": "connecting"}.items() <= link[-1].items()


def test_receiver_down_for_30_s_then_back_gets_every_event_once_in_order(
    live_factory: LiveFactory, receiver: Receiver, endpoint: WebhookEndpoint
) -> None:
    live = live_factory(**FAST)
    http = session_for(live.server, make_user("olivia"))
    wait_for(lambda: receiver.received, what="the link event")
    receiver.stop()
    down_until = time.monotonic() + 30
    pks = []
    n = 0
    while time.monotonic() < down_until - 5:  # calls go on while the receiver is down
        sent = live.sim.inject(f"0770090{n:04d}")
        call = arrived(sent)
        pks.append(call.pk)
        if n % 3 == 0:
            assert http.post(f"{live.url}/calls/{call.pk}/accept", timeout=10).status_code == 200
        elif n % 3 == 1:
            assert http.post(f"{live.url}/calls/{call.pk}/refuse", timeout=10).status_code == 200
        n += 1
        time.sleep(1.0)
    wait_for(
        lambda: Call.objects.filter(pk__in=pks, status__in=FINAL).count() == len(pks),
        timeout=30,
        what="every call to end",
    )
    during = len(receiver.received)
    assert WebhookDelivery.objects.filter(attempts__gt=0, state=DeliveryState.PENDING).exists()
    time.sleep(max(0.0, down_until - time.monotonic()))
    receiver.start()  # the same port, back up
    wait_for(
        lambda: not WebhookDelivery.objects.exclude(state=DeliveryState.DELIVERED).exists(),
        timeout=60,
        what="every delivery made after the receiver came back",
    )
    events = _assert_complete_and_in_order(receiver)
    assert len(receiver.received) - during == len(events) - during  # no id delivered twice
    assert Counter(e["id"] for e in receiver.events()).most_common(1)[0][1] == 1
    assert {e["data"].get("call_id") for e in events} >= set(pks)


def test_a_hanging_receiver_does_not_slow_intake_or_decisions(
    live_factory: LiveFactory, receiver: Receiver, endpoint: WebhookEndpoint
) -> None:
    receiver.answer = lambda n: None  # every request hangs (longer than the read timeout)
    receiver.hang = 60.0
    live = live_factory(window=10.0, WEBHOOK_READ_TIMEOUT_SECONDS="10", **FAST)
    http = session_for(live.server, make_user("olivia"))
    wait_for(lambda: receiver.received, what="the first request to hang")
    intake_s, decide_s = [], []
    for n in range(8):
        started = time.monotonic()
        call = arrived(live.sim.inject(f"0770091{n:04d}"), timeout=30)
        intake_s.append(time.monotonic() - started)
        started = time.monotonic()
        answer = http.post(f"{live.url}/calls/{call.pk}/accept", timeout=30)
        decide_s.append(time.monotonic() - started)
        assert answer.status_code == 200, answer.text
    # Normal is tens of milliseconds on this machine; the bound is far above it, far below the
    # 10 s a request to the hanging receiver takes.
    assert max(intake_s) < 2.0, intake_s
    assert max(decide_s) < 2.0, decide_s
    assert WebhookDelivery.objects.filter(state=DeliveryState.PENDING).count() >= 8
