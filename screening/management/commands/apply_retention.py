"""`manage.py apply_retention`: pseudonymise numbers older than RETENTION_DAYS now
(screening.calls.retention; the sweeper does it daily)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from screening.calls import retention


class Command(BaseCommand):
    help = (
        "Replace callers' numbers older than RETENTION_DAYS by their pseudonym in calls, audit "
        "rows, notes and review answers (the sweeper does this daily). Safe to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Only count what would change.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not retention.enabled():
            self.stdout.write("Retention is off (RETENTION_DAYS=0): numbers are kept.")
            return
        if options["dry_run"]:
            due = retention.pending()
            before = timezone.localtime(due.cutoff)
            self.stdout.write(
                f"Would pseudonymise (RETENTION_DAYS={settings.RETENTION_DAYS}): {due.calls} "
                f"calls, {due.notes} notes and {due.reviews} review answers from before "
                f"{before:%Y-%m-%d %H:%M}."
            )
            return
        result = retention.apply()
        if not result.changed:
            self.stdout.write(
                f"Nothing to do: no number older than {settings.RETENTION_DAYS} days is left."
            )
            return
        self.stdout.write(self.style.SUCCESS(f"Retention: {result.describe()}."))
