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
its reason, which is logged. Pseudonymising a call, the one change made to rows that stay, is
``pseudonymise`` below and nowhere else: retention (screening.calls.retention) and erasure
(screening.calls.erasure) both call it, and each writes its own audit row about the run in the
same transaction (docs/retention.md). ``manage.py flush`` (which wipes every table, the audit
included) goes through it too. See docs/architecture.md, "The audit trail is append-only".

How the declaration reaches the trigger: on PostgreSQL a transaction-local setting
(``set_config(..., is_local => true)``) that the trigger function reads; on SQLite, whose triggers
cannot see temporary tables or connection state, a row in the guard table
``screening_audit_rewrite`` written first and deleted before the transaction commits. SQLite has
one writer at a time, so no other connection can act while the row exists.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from screening.calls import pseudonyms
from screening.calls.numbers import normalise
from screening.models import AuditEvent, Call

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

    def replace(self, rows: list[AuditEvent], fields: list[str]) -> int:
        """Write ``fields`` of ``rows`` (instances holding their new values) in a few statements;
        returns how many rows were written."""
        if not rows:
            return 0
        # A plain queryset: AuditEvent's own refuses updates, and bulk_update goes through it.
        plain = models.QuerySet(AuditEvent, using=self.using)
        count = plain.bulk_update(rows, fields, batch_size=500)
        log.warning("audit rewrite (%s): %d rows rewritten (%s)", self.reason, count, fields)
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


# --- pseudonymising calls ---------------------------------------------------------------------

# The call columns that may hold the caller's number besides ``caller``/``caller_key``: the card's
# context (contact, notes), the history shown with it, and a refusal's free-text note.
_CALL_TEXT = ("history", "context", "reason_note")
# A number as people type it in free text: digits with spaces, dashes, dots or brackets between.
_TYPED_NUMBER = re.compile(r"(?<![0-9A-Za-z+])\+?\(?\d[\d\s\-./()]{4,}\d(?![0-9A-Za-z])")


def scrub_typed(value: Any, key: str, token: str) -> Any:
    """``value`` (text or JSON-like) with every number typed any way that reads as ``key`` (the
    rules' form) replaced by ``token``: for what people wrote (notes, reasons), where the number
    need not be in the form the PBX sent. Not for audit rows, which take exactly
    ``pseudonyms.scrub_audit`` (the form the audit chain hashes)."""
    if not key or not token:
        return value

    def replace(match: re.Match[str]) -> str:
        return token if normalise(match.group()) == key else match.group()

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _TYPED_NUMBER.sub(replace, item)
        if isinstance(item, dict):
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        return item

    return walk(value)


@dataclass
class Pseudonymised:
    calls: int = 0  # calls whose number was replaced
    audit_rows: int = 0  # of their audit rows, those that held the number

    def __iadd__(self, other: Pseudonymised) -> Pseudonymised:
        self.calls += other.calls
        self.audit_rows += other.audit_rows
        return self


def pseudonymise(call_ids: Iterable[int], reason: str) -> Pseudonymised:
    """Replace the caller's number of these calls by their pseudonym (``Call.caller_token``), in
    the calls and in their audit rows: the one write allowed on audit rows that stay.

    Each audit row gets exactly ``pseudonyms.scrub_audit`` of itself, the form the audit chain
    hashes, so the chain verifies afterwards; the call's ``caller`` and ``caller_key`` become the
    pseudonym, after which scrubbing again changes nothing (calls already done are skipped). A
    call stored before pseudonyms existed gets its pseudonym first. Must run inside the caller's
    transaction, which also writes the audit row saying that this happened (retention, erasure):
    so no rewrite is ever committed without its row. Calls are locked first, so a concurrent
    write to one of them waits, and one that got there first is not overwritten.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("pseudonymise runs inside the transaction that audits it")
    done = Pseudonymised()
    ids = list(call_ids)
    if not ids:
        return done
    calls = list(
        Call.objects.select_for_update()
        .filter(pk__in=ids)
        .exclude(caller="")
        .only("pk", "version", "caller", "caller_key", "caller_token", *_CALL_TEXT)
        .order_by("pk")
    )
    changed: list[Call] = []
    numbers: dict[int, tuple[tuple[str, str], str]] = {}
    for call in calls:
        if call.caller == call.caller_token and call.caller_key in ("", call.caller_token):
            continue  # done already
        token = call.caller_token or pseudonyms.for_caller(call.caller, call.caller_key)
        # The audit rows are scrubbed below with the call's columns as stored, as the chain does.
        numbers[call.pk] = ((call.caller, call.caller_key), token)
        forms = pseudonyms.forms(call.caller, call.caller_key)
        for field in _CALL_TEXT:
            value = pseudonyms.scrub(getattr(call, field), forms, token)
            setattr(call, field, scrub_typed(value, call.caller_key, token))
        call.caller_token = token
        call.caller = token
        # A caller that was no number (none in the rules' form) keeps having no key.
        call.caller_key = token if call.caller_key else ""
        call.version += 1  # every write to a call bumps it (screening.calls.store)
        changed.append(call)
    if not changed:
        return done
    with rewriting(reason) as rewrite:
        rows: list[AuditEvent] = []
        events = AuditEvent.objects.filter(call_id__in=list(numbers)).only(
            "pk", "call_id", "message", "detail"
        )
        for row in events.order_by("pk").iterator(chunk_size=2000):
            (caller, caller_key), token = numbers[row.call_id]
            message, detail = pseudonyms.scrub_audit(
                row.message, row.detail, caller=caller, caller_key=caller_key, token=token
            )
            if (message, detail) != (row.message, row.detail):
                row.message, row.detail = message, detail
                rows.append(row)
        done.audit_rows = rewrite.replace(rows, ["message", "detail"])
        fields = ["caller", "caller_key", "caller_token", "version", *_CALL_TEXT]
        done.calls = Call.objects.bulk_update(changed, fields, batch_size=500)
    return done
