"""The sender against a real local HTTP receiver: signed requests, retries, dead letters, and two
delivery loops sharing one outbox (PostgreSQL: SKIP LOCKED; SQLite: the conditional claim)."""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from screening.calls import intake
from screening.metrics import REGISTRY
from screening.models import DeliveryState, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from screening.webhooks import delivery, outbox, signing
from screening.webhooks.delivery import Sender
from tests.support.calls import incoming
from tests.support.live import wait_for
from tests.webhooks.conftest import SECRET
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

Senders = Callable[[int], list[Sender]]


def _state(pk: int) -> str:
    return WebhookDelivery.objects.get(pk=pk).state


def test_the_signature_verifies_as_a_receiver_checks_it(
    receiver: Receiver, endpoint: WebhookEndpoint, senders: Senders
) -> None:
    intake.receive_call(incoming(), via="test")
    senders(1)
    got = wait_for(lambda: receiver.received, what="the event")[0]
    assert got.headers["Content-Type"] == "application/json"
    assert got.verified(SECRET)
    assert not got.verified("another secret")
    header = got.headers[signing.HEADER]
    assert not signing.verify(SECRET, header, got.raw + b" ")  # the body as sent, byte for byte
    t = int(header.split(",")[0].removeprefix("t="))
    assert abs(t - got.at) < 60
    # A captured request replayed more than 5 minutes later is refused.
    assert not signing.verify(SECRET, header, got.raw, now=t + 301)
    assert signing.verify(SECRET, header, got.raw, now=t + 299)
    row = WebhookDelivery.objects.get()
    assert got.raw == row.body.encode()
    assert got.headers["X-Pbxscreen-Event"] == "call.received"
    assert got.headers["X-Pbxscreen-Event-Id"] == str(row.event_id)
    wait_for(lambda: _state(row.pk) == DeliveryState.DELIVERED, what="delivered")


@pytest.mark.parametrize(
    "header",
    ["", "t=abc,v1=00", "v1=00", "t=1,v1=", "garbage", "t=1700000000", ",,,=,="],
)
def test_malformed_signatures_are_refused_not_raised(header: str) -> None:
    assert signing.verify(SECRET, header, b"{}", now=1700000000) is False


def _deliveries_counted(result: str) -> float:
    value = REGISTRY.get_sample_value("pbxscreen_webhook_deliveries_total", {"result": result})
    return value or 0.0


def test_a_receiver_answering_500_then_200_gets_the_event_exactly_once_more(
    receiver: Receiver, endpoint: WebhookEndpoint, senders: Senders, fast_retries: Any
) -> None:
    receiver.answer = lambda n: 500 if n == 0 else 200
    counted = {result: _deliveries_counted(result) for result in ("delivered", "failed")}
    intake.receive_call(incoming(), via="test")
    row = WebhookDelivery.objects.get()
    senders(1)
    wait_for(lambda: _state(row.pk) == DeliveryState.DELIVERED, what="delivered")
    # /metrics counts both attempts by result.
    assert _deliveries_counted("failed") == counted["failed"] + 1
    assert _deliveries_counted("delivered") == counted["delivered"] + 1
    time.sleep(1.0)  # many poll intervals: nothing more goes out
    assert receiver.ids() == [str(row.event_id)] * 2
    row.refresh_from_db()
    assert row.attempts == 2
    assert row.last_status == 200
    assert row.delivered_at is not None
    attempts = list(WebhookAttempt.objects.filter(delivery=row).order_by("at"))
    assert [a.status_code for a in attempts] == [500, 200]
    assert attempts[0].error == "HTTP 500"
    assert all(a.latency_ms is not None and a.latency_ms >= 0 for a in attempts)


def test_a_delivery_is_dead_after_the_time_limit(
    receiver: Receiver,
    endpoint: WebhookEndpoint,
    senders: Senders,
    fast_retries: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fast_retries.WEBHOOK_MAX_AGE_SECONDS = 1.0
    receiver.answer = lambda n: 503
    intake.receive_call(incoming(), via="test")
    row = WebhookDelivery.objects.get()
    with caplog.at_level(logging.ERROR, logger="screening.webhooks"):
        senders(1)
        wait_for(lambda: _state(row.pk) == DeliveryState.DEAD, timeout=20, what="dead")
    row.refresh_from_db()
    assert row.attempts >= 2
    assert WebhookAttempt.objects.filter(delivery=row).count() == row.attempts
    assert row.created_at + timezone.timedelta(seconds=1) <= timezone.now()
    assert any("is dead after" in r.getMessage() for r in caplog.records)
    sent = len(receiver.received)
    time.sleep(0.5)
    assert len(receiver.received) == sent  # dead is final


def test_an_unreachable_or_broken_url_is_an_attempt_that_failed(
    senders: Senders, fast_retries: Any
) -> None:
    closed = Receiver()  # a port nothing listens on
    WebhookEndpoint.objects.create(url=closed.url, secret="x")
    WebhookEndpoint.objects.create(url="http://[::1", secret="x")  # stored before validation
    intake.receive_call(incoming(), via="test")
    senders(1)
    wait_for(
        lambda: WebhookAttempt.objects.values("delivery").distinct().count() == 2,
        what="an attempt at both",
    )
    for attempt in WebhookAttempt.objects.all():
        assert attempt.status_code is None
        assert attempt.error


@pytest.mark.parametrize("concurrency", [1, 3])
def test_events_of_one_call_go_in_order_and_two_loops_never_send_a_row_twice(
    receiver: Receiver,
    endpoint: WebhookEndpoint,
    senders: Senders,
    fast_retries: Any,
    concurrency: int,
) -> None:
    fast_retries.WEBHOOK_CONCURRENCY = concurrency  # 3: requests side by side from HTTP threads
    # Every third request fails at first, so retries interleave with new rows.
    receiver.answer = lambda n: 500 if n % 3 == 0 else 200
    calls = [intake.receive_call(incoming(f"1700000000.{i}"), via="test").call for i in range(20)]
    for call in calls:  # two more events per call, after its call.received
        for step in ("call.decided", "call.outcome_confirmed"):
            with transaction.atomic():
                outbox.enqueue(step, {"step": step}, call_id=call.pk, created=timezone.now())
    rows = WebhookDelivery.objects.count()
    assert rows == 60
    senders(2)
    wait_for(
        lambda: WebhookDelivery.objects.filter(state=DeliveryState.DELIVERED).count() == rows,
        timeout=60,
        what="every row delivered",
    )
    delivered = [r.event for r in receiver.received if r.verified(SECRET)]
    attempts = WebhookAttempt.objects.count()
    assert len(receiver.received) == attempts  # every request is one recorded attempt
    # ... counted on its row by the one sender holding it (a second sender's would not count).
    assert sum(WebhookDelivery.objects.values_list("attempts", flat=True)) == attempts
    per_id = Counter(e["id"] for e in delivered)
    ok_ids = {str(i) for i in WebhookDelivery.objects.values_list("event_id", flat=True)}
    assert set(per_id) == ok_ids
    # A row is in flight at one sender at a time: its requests never overlap, and it got exactly
    # one successful request (the 200 that made it delivered).
    successes = Counter(
        r.event["id"] for i, r in enumerate(receiver.received) if receiver.answer(i) == 200
    )
    assert all(n == 1 for n in successes.values())
    assert len(successes) == rows
    # In order per call: each call's events were first received in the order they were written.
    order: dict[int, list[str]] = defaultdict(list)
    for event in delivered:
        call_id = event["data"].get("call_id") or _call_of(event["id"])
        if event["id"] not in order[call_id]:
            order[call_id].append(event["id"])
    for call in calls:
        written = [
            str(e)
            for e in WebhookDelivery.objects.filter(call=call)
            .order_by("pk")
            .values_list("event_id", flat=True)
        ]
        assert order[call.pk] == written


def _call_of(event_id: str) -> int:
    return int(WebhookDelivery.objects.get(event_id=event_id).call_id)


def test_a_claimed_row_is_not_taken_again_until_its_lease_ends(
    endpoint: WebhookEndpoint,
) -> None:
    intake.receive_call(incoming(), via="test")
    first, lease = delivery.claim()
    assert len(first) == 1
    assert delivery.claim()[0] == []  # another process finds it leased
    later = lease + timezone.timedelta(seconds=1)
    again, _ = delivery.claim(now=later)  # the holder died: the lease ran out
    assert [r.pk for r in again] == [first[0].pk]
    # The first holder's late answer is kept as an attempt but does not overwrite the row.
    assert delivery.record(first[0], lease, delivery.Result(200, 5, "")) == delivery.DELIVERED
    assert _state(first[0].pk) == DeliveryState.PENDING
    assert WebhookAttempt.objects.count() == 1
