"""What /metrics reads at scrape time (the link state from the cache, dead webhook deliveries
from the database), and that a source being down leaves its metric out instead of failing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from django.db import OperationalError
from django.test import RequestFactory

from screening import metrics
from screening.models import DeliveryState, WebhookDelivery, WebhookEndpoint
from screening.pbx import link
from tests.metrics.scrape import TOKEN, Samples

pytestmark = pytest.mark.django_db

DEAD = "pbxscreen_webhook_dead_deliveries"


def exposed() -> Samples:
    return Samples.parse(metrics.exposition().decode())


def test_the_exposition_parses_and_names_every_metric_of_the_product() -> None:
    samples = exposed()
    ours = {name for name in samples.families if name.startswith("pbxscreen_")}
    assert ours >= {
        "pbxscreen_calls_received",
        "pbxscreen_calls_ended",
        "pbxscreen_decision_seconds",
        "pbxscreen_pbx_request_seconds",
        "pbxscreen_pbx_errors",
        "pbxscreen_pbx_tokens_issued",
        "pbxscreen_pbx_link_up",
        "pbxscreen_pbx_link_state",
        "pbxscreen_operator_sockets",
        "pbxscreen_push_fanout_seconds",
        "pbxscreen_webhook_deliveries",
        "pbxscreen_webhook_dead_deliveries",
        "pbxscreen_lookup_seconds",
    }
    # The rest is the process's own (memory, CPU, garbage collector), from prometheus_client.
    others = samples.families - ours
    assert others
    assert all(n.startswith(("process_", "python_")) for n in others), others
    for result in metrics.WEBHOOK_RESULTS:  # there at 0 from the start, for rate() and alerts
        assert samples.has("pbxscreen_webhook_deliveries_total", result=result)


def test_dead_deliveries_are_counted_in_the_database() -> None:
    endpoint = WebhookEndpoint.objects.create(url="https://crm.example.com/hook", secret="s" * 32)
    for state in (DeliveryState.DEAD, DeliveryState.DEAD, DeliveryState.PENDING):
        WebhookDelivery.objects.create(
            endpoint=endpoint, event_id=uuid.uuid4(), type="call.decided", body="{}", state=state
        )
    assert exposed().get(DEAD) == 2


def test_a_database_error_leaves_the_dead_deliveries_out_and_the_rest_in(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    def down(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(WebhookDelivery.objects, "filter", down)
    with caplog.at_level(logging.WARNING, "screening.metrics"):
        samples = exposed()
    assert not samples.has(DEAD)
    assert samples.has("pbxscreen_pbx_link_up")
    assert samples.has("pbxscreen_operator_sockets")
    assert "dead webhook deliveries not counted" in caplog.text
    # Through the view too: the scrape still succeeds.
    settings.METRICS_TOKEN = TOKEN
    request = RequestFactory().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    response = asyncio.run(metrics.view(request))
    assert response.status_code == 200
    assert DEAD not in response.content.decode().replace(f"# HELP {DEAD}", "")


@pytest.mark.parametrize(
    ("state", "up"),
    [
        (link.UP, 1),
        (link.WEBHOOK, 1),
        (link.DOWN, 0),
        (link.CONNECTING, 0),
        (link.AUTH_FAILED, 0),
    ],
)
def test_the_link_state_is_the_one_the_banner_shows(state: str, up: int) -> None:
    link.set_state(state)
    samples = exposed()
    assert samples.get("pbxscreen_pbx_link_up") == up
    assert samples.get("pbxscreen_pbx_link_state", state=state) == 1
    assert samples.get("pbxscreen_pbx_link_state") == 1  # exactly one state is current


def test_a_listener_that_stopped_reporting_reads_as_down(settings: Any) -> None:
    link.set_state(link.UP)
    value = link.cache.get(link.KEY)
    value["updated"] -= 10 * settings.PBX_HEARTBEAT_SECONDS
    link.cache.set(link.KEY, value)
    samples = exposed()
    assert samples.get("pbxscreen_pbx_link_up") == 0
    assert samples.get("pbxscreen_pbx_link_state", state=link.DOWN) == 1


def test_an_unreadable_link_state_is_left_out(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> Any:
        raise RuntimeError("cache exploded")

    monkeypatch.setattr(link, "get_state", broken)
    with caplog.at_level(logging.ERROR, "screening.metrics"):
        samples = exposed()
    assert not samples.has("pbxscreen_pbx_link_up")
    assert "pbxscreen_calls_received" in samples.families
    assert "link state could not be read" in caplog.text
