from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ScreeningConfig(AppConfig):
    name = "screening"
    verbose_name = _("Call screening")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from screening import i18n, metrics
        from screening.calls import sessions
        from screening.webhooks import outbox

        sessions.connect_signals()  # operator sockets close when their access ends
        i18n.connect_signals()  # the user's language and time zone kept in the session
        outbox.connect()  # outgoing webhooks: outbox rows in every state change's transaction
        metrics.install()  # call counters, from the audit rows of every state change
