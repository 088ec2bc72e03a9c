"""`manage.py import_contacts FILE`: contacts from CSV or vCard (screening.contacts.importer)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from screening.contacts.importer import ImportFileError, import_file


class Command(BaseCommand):
    help = (
        "Import contacts from a CSV file (header with name, organisation, number; several "
        "numbers separated by ';') or a vCard 3/4 file (.vcf). Re-importing changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="a .csv or .vcf file, UTF-8")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = import_file(options["file"])
        except ImportFileError as exc:
            raise CommandError(f"Nothing imported: {exc}") from None
        for problem in result.problems:
            self.stderr.write(str(problem))
        self.stdout.write(
            self.style.SUCCESS(
                f"{result.read} contacts read: {result.outcome.describe()}; "
                f"{len(result.problems)} problems reported"
            )
        )
