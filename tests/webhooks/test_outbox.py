"""The outbox: an event row exists if and only if its state change committed, one per subscribed
endpoint, with the documented body; and intake pays nothing when no endpoint is active."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from screening.calls import endings, intake
from screening.models import Call, WebhookDelivery, WebhookEndpoint
from screening.pbx import link
from screening.webhooks import events
from tests.support.calls import incoming
from tests.support.live import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def test_a_rolled_back_state_change_produces_no_event(endpoint: WebhookEndpoint) -> None:
    def store_then_fail() -> None:
        with transaction.atomic():
            intake.receive_call(incoming("1700000000.1"), via="test")
            assert WebhookDelivery.objects.count() == 1  # inside the change's transaction
            raise Boom

    with pytest.raises(Boom):
        store_then_fail()
    assert not Call.objects.exists()
    assert not WebhookDelivery.objects.exists()

    intake.receive_call(incoming("1700000000.2"), via="test")  # the same change, committed
    row = WebhookDelivery.objects.get()
    assert row.type == events.CALL_RECEIVED
    assert row.call is not None
    assert row.call.pbx_call_id == "1700000000.2"


def test_the_body_is_the_documented_envelope(endpoint: WebhookEndpoint) -> None:
    call = intake.receive_call(incoming(caller="07700900123"), via="test").call
    row = WebhookDelivery.objects.get()
    body = json.loads(row.body)
    assert set(body) == {"id", "type", "created", "data"}
    assert body["id"] == str(row.event_id)
    assert uuid.UUID(body["id"])
    assert body["type"] == "call.received"
    data = body["data"]
    assert data["call_id"] == call.pk
    assert data["pbx_call_id"] == call.pbx_call_id
    assert (data["caller"], data["called"], data["trunk"]) == (
        "07700900123",
        "02079460000",
        "peer-to-41",
    )
    assert data["status"] == "pending"
    assert data["decision"] is None
    assert data["decided_by"] is None
    documented = (ROOT / "docs" / "webhooks.md").read_text(encoding="utf-8")
    for name in data:
        assert f"`{name}`" in documented, f"data field {name} is not documented"


def test_one_event_has_one_id_across_endpoints_and_subscriptions_filter(
    endpoint: WebhookEndpoint,
) -> None:
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/b", secret="x", events=["call.received"])
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/c", secret="x", events=["call.expired"])
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/d", secret="x", active=False)
    intake.receive_call(incoming(), via="test")
    rows = list(WebhookDelivery.objects.order_by("endpoint_id"))
    assert [r.endpoint.url for r in rows] == [endpoint.url, "http://127.0.0.1:9/b"]
    assert rows[0].event_id == rows[1].event_id
    assert rows[0].body == rows[1].body


def test_intake_pays_no_webhook_query_when_no_endpoint_is_active() -> None:
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/", secret="x", active=False)
    intake.receive_call(incoming("1700000000.1"), via="test")  # warms the endpoint cache
    with CaptureQueriesContext(connection) as queries:
        intake.receive_call(incoming("1700000000.2"), via="test")
    touched = [q["sql"] for q in queries if "webhook" in q["sql"].lower()]
    assert touched == []
    assert not WebhookDelivery.objects.exists()


def test_saving_an_endpoint_takes_effect_at_once_in_its_process() -> None:
    intake.receive_call(incoming("1700000000.1"), via="test")  # caches "no endpoints"
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/", secret="x")
    intake.receive_call(incoming("1700000000.2"), via="test")
    assert WebhookDelivery.objects.count() == 1


def test_an_endpoint_deleted_behind_the_cache_costs_no_state_change(
    endpoint: WebhookEndpoint,
) -> None:
    intake.receive_call(incoming("1700000000.1"), via="test")  # caches the endpoint
    # Deleted by another process: no signal here, the cache still names it.
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()
    call = intake.receive_call(incoming("1700000000.2"), via="test").call
    assert Call.objects.filter(pk=call.pk).exists()


def test_a_link_change_is_an_event_and_a_refreshed_state_is_not(
    endpoint: WebhookEndpoint,
) -> None:
    link.set_state(link.CONNECTING)
    link.set_state(link.UP)
    link.set_state(link.UP)  # the heartbeat: no change
    link.set_state(link.DOWN, "socket closed")
    rows = list(WebhookDelivery.objects.order_by("pk"))
    assert [r.type for r in rows] == ["pbx_link.changed"] * 3
    data = [json.loads(r.body)["data"] for r in rows]
    assert [(d["previous_state"], d["state"]) for d in data] == [
        (None, "connecting"),
        ("connecting", "up"),
        ("up", "down"),
    ]
    assert data[2]["unscreened"] is True
    assert data[2]["detail"] == "socket closed"
    assert all(r.call_id is None for r in rows)


def test_a_decision_the_deciding_process_never_finished_is_call_failed(
    endpoint: WebhookEndpoint,
) -> None:
    call = intake.receive_call(incoming(), via="test").call
    Call.objects.filter(pk=call.pk).update(
        status="deciding", decision="accept", deadline=timezone.now() - timedelta(minutes=2)
    )
    assert endings.sweep() == 1
    failed = WebhookDelivery.objects.order_by("pk").last()
    assert failed is not None
    assert failed.type == "call.failed"
    data = json.loads(failed.body)["data"]
    assert data["status"] == "failed"
    assert data["pbx_errmsg"] == "outcome unknown"
