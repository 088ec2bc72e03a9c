"""Registering endpoints (admin, ``add_webhook``) and redelivering from admin."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from screening.calls import intake
from screening.models import DeliveryState, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.support.calls import incoming
from tests.support.live import ROOT

pytestmark = pytest.mark.django_db


def test_add_webhook_registers_an_endpoint_for_all_or_some_events() -> None:
    call_command("add_webhook", "https://crm.example.com/hook", "--secret", "abc")
    call_command(
        "add_webhook",
        "http://10.0.0.5:8080/in",
        "--secret",
        "def",
        "--events",
        "call.expired, call.decided",
    )
    every, some = WebhookEndpoint.objects.order_by("pk")
    assert (every.url, every.secret, every.events, every.active) == (
        "https://crm.example.com/hook",
        "abc",
        [],
        True,
    )
    assert some.events == ["call.decided", "call.expired"]  # documented order


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["https://x.example/h", "--secret", "s", "--events", "call.decidd"], "call.decidd"),
        (["https://x.example/h", "--secret", "s", "--events", "call.*"], "Unknown event"),
        (["ftp://x.example/h", "--secret", "s"], "http"),
        (["not a url", "--secret", "s"], "http"),
        (["https://x.example/h", "--secret", " "], "secret"),
        (["https://x.example/" + "a" * 600, "--secret", "s"], "longer"),
    ],
)
def test_add_webhook_refuses_bad_input_clearly(args: list[str], says: str) -> None:
    with pytest.raises(CommandError, match=says):
        call_command("add_webhook", *args)
    assert not WebhookEndpoint.objects.exists()


def test_add_webhook_exits_non_zero_from_the_command_line() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "add_webhook",
            "https://x.example/h",
            "--secret",
            "s",
            "--events",
            "nope",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "Unknown event types: nope" in done.stderr
    assert "Traceback" not in done.stderr


def test_admin_adds_an_endpoint_with_event_checkboxes_and_never_shows_the_secret(
    admin_web: Client,
) -> None:
    add = reverse("admin:screening_webhookendpoint_add")
    page = admin_web.get(add)
    assert page.status_code == 200
    assert 'type="checkbox"' in page.text
    assert "call.outcome_confirmed" in page.text
    answer = admin_web.post(
        add,
        {
            "url": "https://crm.example.com/hook",
            "secret": "top-secret-value",
            "events": ["call.decided", "pbx_link.changed"],
            "active": "on",
        },
    )
    assert answer.status_code == 302, answer.content
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["call.decided", "pbx_link.changed"]
    change = reverse("admin:screening_webhookendpoint_change", args=[endpoint.pk])
    assert "top-secret-value" not in admin_web.get(change).text
    # Saved again with the secret left blank: the secret is kept.
    answer = admin_web.post(change, {"url": endpoint.url, "secret": "", "events": []})
    assert answer.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.secret == "top-secret-value"
    assert endpoint.events == []
    assert not endpoint.active


def test_admin_refuses_a_bad_url_and_a_new_endpoint_without_secret(admin_web: Client) -> None:
    add = reverse("admin:screening_webhookendpoint_add")
    answer = admin_web.post(add, {"url": "javascript:alert(1)", "secret": "", "events": ["x"]})
    assert answer.status_code == 200
    errors = answer.context["adminform"].form.errors
    assert set(errors) == {"url", "secret", "events"}
    assert not WebhookEndpoint.objects.exists()


def test_admin_lists_deliveries_with_attempts_and_redelivers(admin_web: Client) -> None:
    WebhookEndpoint.objects.create(url="http://127.0.0.1:9/", secret="x")
    intake.receive_call(incoming(), via="test")
    row = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=row.pk).update(
        state=DeliveryState.DEAD, attempts=7, last_status=500
    )
    WebhookAttempt.objects.create(delivery=row, status_code=500, latency_ms=12, error="HTTP 500")
    changelist = reverse("admin:screening_webhookdelivery_changelist")
    for query in (
        "",
        "?state__exact=dead",
        "?type=call.received",
        f"?endpoint__id__exact={row.endpoint_id}",
    ):
        page = admin_web.get(changelist + query)
        assert page.status_code == 200
        assert "call.received" in page.text
    detail = admin_web.get(reverse("admin:screening_webhookdelivery_change", args=[row.pk]))
    assert detail.status_code == 200
    assert "HTTP 500" in detail.text
    answer = admin_web.post(
        changelist, {"action": "redeliver", "_selected_action": [row.pk]}, follow=True
    )
    assert answer.status_code == 200
    assert "1 delivery will be sent again now." in answer.text
    row.refresh_from_db()
    assert row.state == DeliveryState.PENDING
    assert row.attempts == 7
    assert WebhookAttempt.objects.filter(delivery=row).count() == 1
