from __future__ import annotations

from django.apps import AppConfig


class ScreeningConfig(AppConfig):
    name = "screening"
    verbose_name = "Call screening"
    default_auto_field = "django.db.models.BigAutoField"
