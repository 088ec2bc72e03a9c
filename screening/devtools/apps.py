from __future__ import annotations

from django.apps import AppConfig


class DevToolsConfig(AppConfig):
    name = "screening.devtools"
    label = "screening_devtools"
    verbose_name = "pbxscreen development tools"
