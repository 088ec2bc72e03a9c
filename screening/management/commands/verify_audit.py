"""`manage.py verify_audit`: walk the audit chain and name the first row that does not match.

Prints "N rows verified" and exits 0, or the first break (which row, where in the chain, which
call, what kind of row, when, and how it does not match) and exits 1. The walk reads the rows in
batches, so any size of audit is checked in bounded memory (docs/audit-chain.md).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from screening.calls import chain


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain; exit status 1 at the first row that breaks it."

    def add_arguments(self, parser: CommandParser) -> None:
        where = parser.add_mutually_exclusive_group()
        where.add_argument(
            "--from-seq",
            type=int,
            default=1,
            help="start at this chain position (trusting the hash of the row before it)",
        )
        where.add_argument("--last", type=int, help="only the newest N rows of the chain")
        parser.add_argument(
            "--batch", type=int, default=chain.BATCH, help=f"rows per query ({chain.BATCH})"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["from_seq"] < 1 or (options["last"] is not None and options["last"] < 1):
            raise CommandError("--from-seq and --last must be at least 1")
        if options["batch"] < 1:
            raise CommandError("--batch must be at least 1")
        result = chain.verify(
            from_seq=options["from_seq"], last=options["last"], batch=options["batch"]
        )
        if not result.ok:
            self.stderr.write(result.describe())
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS(result.describe()))
