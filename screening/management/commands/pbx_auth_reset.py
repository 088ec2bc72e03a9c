"""`manage.py pbx_auth_reset`: allow one more PBX login attempt after an auth failure."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from screening.pbx.client import PbxClient


class Command(BaseCommand):
    help = (
        "Clear the stop placed on PBX logins after an authentication failure. Check the "
        "credentials and the PBX's blocked-IP list first: five failures block this server's IP."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        client = PbxClient.from_settings()
        reason = client.auth_lockout()
        client.reset_auth_lockout()
        if reason:
            self.stdout.write(f"Cleared the PBX login stop ({reason}). The next attempt is live.")
        else:
            self.stdout.write("No PBX login stop was in place.")
