"""`manage.py setup_roles`: the Operators and Supervisors groups with their permissions."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from screening.calls.roles import setup_roles


class Command(BaseCommand):
    help = "Create the Operators and Supervisors groups with their permissions (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        for name in setup_roles():
            self.stdout.write(f"group {name}: ok")
