"""The one sanctioned way to change or delete audit rows.

The audit trail is append-only, and the database holds to it: triggers (migration 0006) refuse
every UPDATE and DELETE of an audit row, and TRUNCATE of the table on PostgreSQL, whatever issues
them (the ORM, a base manager, raw SQL). Only a transaction that declares a rewrite here may
change rows; the declaration lasts until the block ends, and a rollback takes it back with
everything else:

    with audit_rewrite.rewriting("retention: audit rows older than 365 days") as rewrite:
        rewrite.delete(AuditEvent.objects.filter(at__lt=cutoff))
        rewrite.update(AuditEvent.objects.filter(call__in=calls), message="", detail={})

Retention and erasure (deleting or pseudonymising old rows) are the uses this is for; each states
its reason, which is logged. ``manage.py flush`` (which wipes every table, the audit included) goes
through it too. See docs/architecture.md, "The audit trail is append-only".

How the declaration reaches the trigger: on PostgreSQL a transaction-local setting
(``set_config(..., is_local => true)``) that the trigger function reads; on SQLite, whose triggers
cannot see temporary tables or connection state, a row in the guard table
``screening_audit_rewrite`` written first and deleted before the transaction commits. SQLite has
one writer at a time, so no other connection can act while the row exists.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from screening.models import AuditEvent

log = logging.getLogger("screening.calls.audit_rewrite")

# Read by the PostgreSQL trigger function (migration 0006): non-empty means "rewrite declared".
PG_SETTING = "pbxscreen.audit_rewrite"
# SQLite: a row here means "rewrite declared" (migration 0006 creates it; not a Django model, so
# that flush, which empties every model's table in no fixed order, leaves it alone).
SQLITE_GUARD_TABLE = "screening_audit_rewrite"


@dataclass(frozen=True)
class Rewrite:
    """What a declared rewrite may do; each call is logged with the rewrite's reason."""

    reason: str
    using: str

    def update(self, rows: models.QuerySet[AuditEvent], **changes: Any) -> int:
        """Change ``rows`` (e.g. pseudonymise them); returns how many changed."""
        # The base class's update: AuditEvent's own queryset refuses by design.
        count = models.QuerySet.update(rows.using(self.using), **changes)
        log.warning("audit rewrite (%s): %d rows updated (%s)", self.reason, count, sorted(changes))
        return count

    def delete(self, rows: models.QuerySet[AuditEvent]) -> int:
        """Delete ``rows``; returns how many were deleted."""
        _, per_model = models.QuerySet.delete(rows.using(self.using))
        count = per_model.get(AuditEvent._meta.label, 0)
        log.warning("audit rewrite (%s): %d rows deleted", self.reason, count)
        return count


@contextmanager
def rewriting(reason: str, *, using: str = DEFAULT_DB_ALIAS) -> Iterator[Rewrite]:
    """Declare a rewrite of the audit trail for the block, inside one transaction (a savepoint
    when already in one). ``reason`` says why, for the log; it may not be blank."""
    if not reason.strip():
        raise ValueError("an audit rewrite needs a reason")
    connection = connections[using]
    with transaction.atomic(using=using):
        _declare(connection, reason)
        log.warning("audit rewrite begins: %s", reason)
        yield Rewrite(reason, using)
        # Only on success: after an error the transaction (or savepoint) rolls back, which takes
        # the declaration with it, and PostgreSQL would refuse any statement until then.
        _withdraw(connection)


def _declare(connection: BaseDatabaseWrapper, reason: str) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT set_config(%s, %s, true)", [PG_SETTING, reason])
        elif connection.vendor == "sqlite":
            cursor.execute(
                f"INSERT INTO {SQLITE_GUARD_TABLE} (reason) VALUES (%s)",  # noqa: S608 - constant
                [reason],
            )
        else:
            raise NotImplementedError(f"no audit rewrite on {connection.vendor}")


def _withdraw(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Inside an outer transaction the setting would otherwise last until it commits.
            cursor.execute("SELECT set_config(%s, '', true)", [PG_SETTING])
        else:
            cursor.execute(f"DELETE FROM {SQLITE_GUARD_TABLE}")  # noqa: S608 - constant
