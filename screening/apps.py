from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ScreeningConfig(AppConfig):
    name = "screening"
    verbose_name = _("Call screening")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from screening import metrics
        from screening.calls import sessions

        sessions.connect_signals()  # operator sockets close when their access ends
        metrics.install()  # call counters, from the audit rows of every state change

        from screening import i18n

        i18n.connect_signals()  # the user's language and time zone kept in the session
