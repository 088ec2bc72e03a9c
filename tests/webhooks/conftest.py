"""Fixtures of the webhook tests: a local receiver, an endpoint for it, and in-process senders."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from screening.models import WebhookEndpoint
from screening.webhooks import delivery, outbox
from screening.webhooks.delivery import Sender
from tests.webhooks.receiver import Receiver

SECRET = "s3cret-for-the-tests"


@pytest.fixture(autouse=True)
def _fresh_endpoint_cache() -> Iterator[None]:
    # A flushed test database sends no signals: the process's endpoint list must not outlive it.
    outbox.forget_endpoints()
    # A test that served the ASGI application in this process started its sender: these tests
    # count requests from the senders they start themselves.
    delivery.stop()
    yield
    outbox.forget_endpoints()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


@pytest.fixture
def endpoint(receiver: Receiver) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(url=receiver.url, secret=SECRET)


@pytest.fixture
def fast_retries(settings: Any) -> Any:
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0.05
    settings.WEBHOOK_RETRY_CAP_SECONDS = 0.2
    settings.WEBHOOK_POLL_SECONDS = 0.05
    return settings


@pytest.fixture
def senders() -> Iterator[Callable[[int], list[Sender]]]:
    """Start ``n`` delivery loops in this process (each its own thread and connection)."""
    started: list[Sender] = []

    def start(n: int = 1) -> list[Sender]:
        new = [Sender(poll=0.05, name=f"test-sender-{i}").start() for i in range(n)]
        started.extend(new)
        return new

    yield start
    for sender in started:
        sender.stop()
