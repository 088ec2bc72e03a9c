"""`manage.py flush`: Django's, through the audit trail's sanctioned rewrite.

Flush empties every table, the append-only audit trail included, which the database refuses
unless a rewrite is declared (screening.calls.audit_rewrite). The test suite's transactional tests
end with a flush too.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import flush

from screening.calls import audit_rewrite


class Command(flush.Command):
    help = flush.Command.help + " The audit trail goes too (a declared audit rewrite)."

    def handle(self, **options: Any) -> None:
        if options["interactive"]:
            # Asked here, before the transaction opens: SQLite would hold its write lock while
            # someone reads the question.
            answer = input(
                "This will IRREVERSIBLY DESTROY all data, the audit trail included, in the "
                f"{options['database']!r} database.\nType 'yes' to continue, or 'no' to cancel: "
            )
            if answer != "yes":
                self.stdout.write("Flush cancelled.")
                return
        with audit_rewrite.rewriting("manage.py flush", using=options["database"]):
            super().handle(**{**options, "interactive": False})
