"""`manage.py sync_contacts`: copy the PBX's company contacts now (screening.contacts.sync)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from screening.contacts.sync import sync_contacts
from screening.pbx.client import PbxClient
from screening.pbx.trunks import PBX_PROBLEMS


class Command(BaseCommand):
    help = (
        "Copy the PBX's company contacts into local contacts (source pbx): adds, updates and "
        "removes only PBX contacts. The sweeper does this every CONTACT_SYNC_MINUTES."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = sync_contacts(PbxClient.from_settings())
        except PBX_PROBLEMS as exc:
            raise CommandError(f"Contacts unchanged, the PBX failed: {exc}") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.read} PBX contacts read: {result.outcome.describe()}"
                + (f"; {result.skipped} without an id or a usable number" if result.skipped else "")
            )
        )
