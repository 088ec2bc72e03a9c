from __future__ import annotations

from django.apps import AppConfig


class ScreeningConfig(AppConfig):
    name = "screening"
    verbose_name = "Call screening"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from screening.calls import sessions
        from screening.webhooks import outbox

        sessions.connect_signals()  # operator sockets close when their access ends
        outbox.connect()  # outgoing webhooks: outbox rows in every state change's transaction
