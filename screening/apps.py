from __future__ import annotations

from django.apps import AppConfig


class ScreeningConfig(AppConfig):
    name = "screening"
    verbose_name = "Call screening"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from screening.calls import sessions

        sessions.connect_signals()  # operator sockets close when their access ends

        from screening import i18n

        i18n.connect_signals()  # the user's language and time zone kept in the session
