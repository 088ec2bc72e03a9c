"""`manage.py rebuild_precedent [NUMBER ...]`: recompute what the team did with each number.

Decisions keep the per-number precedent up to date as they are recorded; this recomputes it from
the call table, for an install that had calls before precedent existed, after importing history,
or after changing ``PRECEDENT_HALF_LIFE_DAYS`` (docs/precedent.md). Safe to run while the product
runs; a decision recorded during the rebuild of its number may need another run to be counted.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from screening.calls import precedent
from screening.calls.numbers import normalise


class Command(BaseCommand):
    help = "Recompute the per-number precedent (what people and rules decided) from the calls."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "numbers", nargs="*", help="only these numbers (any format); default: all"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        numbers = None
        if options["numbers"]:
            numbers = [normalise(n) for n in options["numbers"]]
            bad = [n for n, key in zip(options["numbers"], numbers, strict=True) if not key]
            if bad:
                self.stderr.write(f"not phone numbers: {', '.join(bad)}")
                raise SystemExit(2)
        written = precedent.rebuild(numbers)
        self.stdout.write(self.style.SUCCESS(f"Precedent rebuilt for {written:,} numbers"))
