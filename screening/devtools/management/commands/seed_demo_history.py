"""`manage.py seed_demo_history --calls N [--days D] [--seed S]`: realistic call history."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from screening.devtools.seed import seed_history


class Command(BaseCommand):
    help = "Add N calls of realistic history (with their audit rows) over the last D days."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--calls", type=int, required=True, help="how many calls to add")
        parser.add_argument("--days", type=int, default=90, help="spread over this many days")
        parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["calls"] < 0 or options["days"] < 1:
            self.stderr.write("--calls must be >= 0 and --days >= 1")
            raise SystemExit(2)

        def progress(done: int) -> None:
            if options["verbosity"] >= 1 and (done % 100_000 == 0 or done == options["calls"]):
                self.stdout.write(f"  {done:,} calls")

        result = seed_history(
            options["calls"], days=options["days"], seed=options["seed"], progress=progress
        )
        rate = result.calls / max(result.seconds, 1e-9)
        self.stdout.write(
            self.style.SUCCESS(
                f"Added {result.calls:,} calls and {result.audit_rows:,} audit rows "
                f"in {result.seconds:.1f} s ({rate:,.0f} calls/s), "
                f"statistics rolled up for {result.rolled_hours:,} closed hours"
            )
        )
