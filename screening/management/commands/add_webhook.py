"""`manage.py add_webhook URL --secret SECRET [--events call.decided,call.expired]`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _

from screening.webhooks import endpoints
from screening.webhooks.events import EVENT_TYPES


class Command(BaseCommand):
    help = "Register an outgoing webhook endpoint (docs/webhooks.md)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("url", help="http:// or https:// URL the events are POSTed to")
        parser.add_argument("--secret", required=True, help="shared secret for the signature")
        parser.add_argument(
            "--events",
            default="",
            help="comma-separated event types (default: all): " + ", ".join(EVENT_TYPES),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            endpoint = endpoints.create(
                options["url"], options["secret"], options["events"].split(",")
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        events = ", ".join(endpoint.events) if endpoint.events else _("all events")
        self.stdout.write(
            _("Webhook endpoint #%(pk)d: %(url)s (%(events)s)")
            % {"pk": endpoint.pk, "url": endpoint.url, "events": events}
        )
