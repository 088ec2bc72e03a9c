"""`manage.py erase_number NUMBER`: erase one caller's number everywhere
(screening.calls.erasure)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from screening.calls import erasure


class Command(BaseCommand):
    help = (
        "Erase one caller's number everywhere at once: its calls and their audit rows keep only "
        "its pseudonym, its notes and contact numbers are deleted, and one audit row (without "
        "the number) records the erasure. The number may be typed any way (+44…, 0…, 0044…)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("number", help="The number to erase, e.g. '+44 7700 900123'")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = erasure.erase(options["number"])
        except erasure.ErasureError as exc:
            raise CommandError(str(exc)) from None
        if result.changed:
            self.stdout.write(self.style.SUCCESS(f"Erased: {result.describe()}"))
        else:
            self.stdout.write(f"Nothing to erase: {result.describe()} The request is in the audit.")
        for warning in result.warnings():
            self.stdout.write(self.style.WARNING(warning))
