"""`manage.py rollup_stats [--since YYYY-MM-DD | --rebuild]`: roll up closed hours for /stats/.

The sweeper does this every few minutes in every running server; the command is for a backfill
(an existing database), after writing calls into the past, or from cron without a server. It is
idempotent: run it as often as you like. See screening.reports.rollup.
"""

from __future__ import annotations

import time
from datetime import date, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Min
from django.utils import timezone

from screening.models import Call
from screening.reports.rollup import describe, rollup


class Command(BaseCommand):
    help = "Roll up the statistics of closed hours (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            type=date.fromisoformat,
            help="recompute every closed hour from this local date on (after writing old calls)",
        )
        parser.add_argument(
            "--rebuild", action="store_true", help="recompute every closed hour from the first call"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since: datetime | None = None
        if options["rebuild"] and options["since"]:
            raise CommandError("Give --since or --rebuild, not both.")
        if options["since"]:
            since = timezone.make_aware(datetime.combine(options["since"], datetime.min.time()))
        elif options["rebuild"]:
            since = Call.objects.aggregate(first=Min("received_at"))["first"]
            if since is None:
                self.stdout.write("No calls.")
                return
        started = time.monotonic()
        result = rollup(since=since)
        self.stdout.write(f"{describe(result)} in {time.monotonic() - started:.1f} s")
