"""Registering endpoints and sending deliveries again: what admin and ``add_webhook`` share, so
both check a URL and event names the same way."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from screening.models import DeliveryState, WebhookDelivery, WebhookEndpoint
from screening.webhooks import delivery
from screening.webhooks.events import EVENT_TYPES

URL_CHARS = 500  # WebhookEndpoint.url
SECRET_CHARS = 200  # WebhookEndpoint.secret
_url = URLValidator(schemes=["http", "https"])


def clean_url(url: str) -> str:
    url = url.strip()
    if len(url) > URL_CHARS:
        raise ValidationError(_("The URL is longer than %(n)d characters.") % {"n": URL_CHARS})
    try:
        _url(url)
    except ValidationError:
        raise ValidationError(
            _("%(url)r is not an http:// or https:// URL.") % {"url": url[:100]}
        ) from None
    return url


def clean_secret(secret: str) -> str:
    if not secret or not secret.strip():
        raise ValidationError(_("The secret must not be empty."))
    if len(secret) > SECRET_CHARS:
        raise ValidationError(
            _("The secret is longer than %(n)d characters.") % {"n": SECRET_CHARS}
        )
    return secret


def clean_events(names: Iterable[str]) -> list[str]:
    """Known event type names, in their documented order; empty means every type."""
    wanted = {n.strip() for n in names if n.strip()}
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(
            _("Unknown event types: %(unknown)s. Known: %(known)s.")
            % {"unknown": ", ".join(unknown), "known": ", ".join(EVENT_TYPES)}
        )
    return [name for name in EVENT_TYPES if name in wanted]


def create(url: str, secret: str, events: Iterable[str] = ()) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        url=clean_url(url), secret=clean_secret(secret), events=clean_events(events)
    )


def redeliver(deliveries: QuerySet[WebhookDelivery]) -> int:
    """Send again, now: back to pending and due, the attempts so far kept (their count too). A
    row older than ``WEBHOOK_MAX_AGE_SECONDS`` gets one try and is dead again if it fails."""
    count = deliveries.update(
        state=DeliveryState.PENDING,
        next_attempt_at=timezone.now(),
        locked_until=None,
        delivered_at=None,
    )
    delivery.wake()
    return count
