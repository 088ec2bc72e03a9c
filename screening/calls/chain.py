"""The tamper-evident audit: every audit row joins one hash chain per database as it is written.

Each row gets the next place in the chain (``chain_seq``, contiguous from 1) and a hash: SHA-256
over the previous row's hash and the row's canonical content (``content``). Changing, deleting
or inserting a row behind the product's back breaks the chain at that row, and ``verify`` (the
``verify_audit`` command, and the sweeper's hourly ``check_recent``) names it. docs/audit-chain.md
says what this does and does not protect against.

Writing (``append``, through screening.calls.store): the chain's head (AuditChainHead, one row) is
taken first with an UPDATE that moves its position on by the rows being added. That UPDATE holds
the head's row lock on PostgreSQL until the transaction commits (SQLite's write transactions hold
the database's write lock from BEGIN already), so transactions join the chain one at a time and in
the order they commit; the rows are then hashed, inserted and the head's hash set, all inside the
caller's transaction.

Lock order: since the head is held until commit, a transaction must not, after its first audit
row, wait for a row another transaction may hold while that one waits for the head. Every writer
therefore writes its audit rows after its other shared writes (the call's row, statistics hours,
rules), or only touches rows afterwards that it has locked already or that others only write
after taking the head themselves.

The number in a row goes into the hash as its pseudonym (screening.calls.pseudonyms.scrub_audit
with the call's ``caller_token``): retention and erasure later write exactly that form into the
row, so they change the row but not its hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from screening import periodic, runtime
from screening.calls import pseudonyms, sql
from screening.calls.sql import table
from screening.models import AuditChainHead, AuditEvent, Call

log = logging.getLogger("screening.calls.chain")

BATCH = 2000  # rows read per query while verifying: memory stays bounded on any size of audit

# --- writing ----------------------------------------------------------------------------------


def _head_sql() -> tuple[str, str, str]:
    head = table(AuditChainHead)
    return (
        f"UPDATE {head} SET seq = seq + %s WHERE id = 1 RETURNING seq, hash",  # noqa: S608
        f"UPDATE {head} SET hash = %s WHERE id = 1",  # noqa: S608
        f"INSERT INTO {head} (id, seq, hash) VALUES (1, %s, %s) ON CONFLICT (id) DO NOTHING",  # noqa: S608
    )


def append(rows: Sequence[AuditEvent]) -> None:
    """Link ``rows`` (new, unsaved) into the chain and insert them, in one transaction (the
    caller's, or one of its own)."""
    if not rows:
        return
    advance = _head_sql()[0]
    with transaction.atomic(savepoint=False):
        _give_tokens(rows)
        with connection.cursor() as cursor:
            cursor.execute(advance, [len(rows)])
            got = cursor.fetchone()
            if got is None:
                _restore_head(cursor)
                cursor.execute(advance, [len(rows)])
                got = cursor.fetchone()
            last, previous = int(got[0]), str(got[1])
            for seq, row in enumerate(rows, start=last - len(rows) + 1):
                row.chain_seq = seq
                row.chain_hash = previous = row_hash(seq, previous, _row_content(row))
            _insert(cursor, rows, previous)


def _insert_sql(count: int, vendor: str) -> str:
    """The rows' INSERT, and on PostgreSQL the head's new hash in the same statement (one round
    trip less on every state change); SQLite, in process, takes the two statements."""
    insert = sql.insert(AuditEvent, count)
    if vendor != "postgresql":
        return f"{insert} RETURNING id"
    head = table(AuditChainHead)
    return (
        f"WITH added AS ({insert} RETURNING id), "  # noqa: S608
        f"closed AS (UPDATE {head} SET hash = %s WHERE id = 1) "
        "SELECT id FROM added ORDER BY id"
    )


def _insert(cursor: Any, rows: Sequence[AuditEvent], last_hash: str) -> None:
    """Insert the chained ``rows`` as one fixed statement (building the ORM's INSERT costs more
    Python than the statement takes to run, on every state change) and set the head's hash."""
    params = sql.insert_params(rows)
    vendor = connection.vendor
    if vendor == "postgresql":
        params.append(last_hash)
    cursor.execute(_insert_sql(len(rows), vendor), params)
    ids = [r[0] for r in cursor.fetchall()]
    for row, pk in zip(rows, sorted(ids), strict=True):
        row.pk = pk
        row._state.adding = False
        row._state.db = connection.alias
    if vendor != "postgresql":
        cursor.execute(_head_sql()[1], [last_hash])


def _restore_head(cursor: Any) -> None:
    """The head row is missing (``manage.py flush`` empties every table): put it back where the
    chain ends, so the next rows continue it instead of colliding with positions in use. Two
    processes doing this at once: the second insert does nothing."""
    newest = (
        AuditEvent.objects.filter(chain_seq__isnull=False)
        .order_by("-chain_seq")
        .values_list("chain_seq", "chain_hash")
        .first()
    )
    seq, hash_ = newest or (0, "")
    cursor.execute(_head_sql()[2], [seq, hash_])
    if seq:
        log.warning("audit chain head was missing: restored at row %d", seq)


def _give_tokens(rows: Sequence[AuditEvent]) -> None:
    """Calls stored before callers had pseudonyms get theirs now (one UPDATE each, only for
    those), so retention later writes the same pseudonym the chain hashed."""
    for row in rows:
        call = row.call if row.call_id is not None else None
        if call is None or call.caller_token or not (call.caller or call.caller_key):
            continue
        token = pseudonyms.for_caller(call.caller, call.caller_key)
        # Not a state change anyone sees (no version bump): only the pseudonym is filled in.
        if not Call.objects.filter(pk=call.pk, caller_token="").update(caller_token=token):
            token = Call.objects.filter(pk=call.pk).values_list("caller_token", flat=True).get()
        call.caller_token = token


def _row_content(row: AuditEvent) -> bytes:
    call = row.call if row.call_id is not None else None
    return content(
        seq=row.chain_seq,
        call_id=row.call_id,
        at=row.at,
        kind=str(row.kind),
        actor_id=row.actor_id,
        message=row.message,
        detail=json.loads(json.dumps(row.detail)),  # as it reads back: lists, string keys
        caller=call.caller if call else "",
        caller_key=call.caller_key if call else "",
        token=call.caller_token if call else "",
    )


# --- what is hashed -----------------------------------------------------------------------------


def content(
    *,
    seq: int | None,
    call_id: int | None,
    at: datetime,
    kind: str,
    actor_id: int | None,
    message: str,
    detail: Any,
    caller: str,
    caller_key: str,
    token: str,
) -> bytes:
    """A row's canonical content (without the previous hash), as bytes. ``detail`` is the JSON
    value as stored (read back, or round-tripped through JSON). A row about a call has its
    number in the pseudonymous form; a row about the record itself (no call) is taken as is."""
    if call_id is not None:
        message, detail = pseudonyms.scrub_audit(
            message, detail, caller=caller or "", caller_key=caller_key or "", token=token or ""
        )
    if timezone.is_naive(at):
        at = timezone.make_aware(at)
    parts = {
        "seq": seq,
        "call": call_id,
        "at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "kind": kind,
        "actor": actor_id,
        "message": message,
        "detail": detail,
    }
    return _canonical(parts).encode("ascii")


def row_hash(seq: int, previous: str, body: bytes) -> str:
    return hashlib.sha256(f"{seq}:{previous}:".encode() + body).hexdigest()


def _canonical(value: Any) -> str:
    """Compact JSON with sorted keys, whatever the database did to the value: PostgreSQL's jsonb
    reorders keys and keeps numbers as decimals (``1e+23`` comes back as an integer), so every
    number is written as its shortest exact decimal, and 1 and 1.0 are the same."""
    if value is None or isinstance(value, bool | str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{json.dumps(k)}:{_canonical(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _number(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # NaN / Infinity (only SQLite stores them)
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if number == 0:
        return "0"
    return str(number.normalize())


# --- verifying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """The first place where the chain does not hold."""

    problem: str
    seq: int | None = None
    row_id: int | None = None
    call_id: int | None = None
    kind: str = ""
    at: datetime | None = None

    def describe(self) -> str:
        if self.row_id is None:
            return f"audit chain broken: {self.problem}"
        where = f"row {self.row_id}"
        if self.seq is not None:
            where += f" (position {self.seq}"
        else:
            where += " (not in the chain"
        where += f", call {self.call_id}" if self.call_id is not None else ", no call"
        if self.kind:
            where += f", {self.kind}"
        if self.at is not None:
            where += f", at {self.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        return f"audit chain broken at {where}): {self.problem}"


@dataclass(frozen=True)
class Verified:
    rows: int  # chained rows checked
    last_seq: int  # the last position checked (0: none)
    last_hash: str
    unchained: int | None = None  # rows older than the chain (full walks only)
    broken: Break | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None

    def describe(self) -> str:
        if self.broken is not None:
            return self.broken.describe()
        text = f"{self.rows:,} rows verified"
        if self.unchained:
            text += f" (plus {self.unchained:,} older rows that predate the chain, unchained)"
        return text


_FIELDS = (
    "id",
    "chain_seq",
    "chain_hash",
    "call_id",
    "at",
    "kind",
    "actor_id",
    "message",
    "detail",
    "call__caller",
    "call__caller_key",
    "call__caller_token",
)


def _rows(start: int, end: int, batch: int) -> Iterator[tuple[Any, ...]]:
    """Chained rows from position ``start`` to ``end``, in order, ``batch`` at a time."""
    after = start - 1
    while after < end:
        page = list(
            AuditEvent.objects.filter(chain_seq__gt=after, chain_seq__lte=end)
            .order_by("chain_seq")
            .values_list(*_FIELDS)[:batch]
        )
        if not page:
            return
        yield from page
        after = page[-1][1]


def head() -> tuple[int, str]:
    """Where the chain ends, as its head says: (position, hash); (0, "") with no head row."""
    row = AuditChainHead.objects.filter(pk=1).values_list("seq", "hash").first()
    return (int(row[0]), str(row[1])) if row else (0, "")


def verify(
    *, from_seq: int = 1, last: int | None = None, previous: str | None = None, batch: int = BATCH
) -> Verified:
    """Walk the chain from ``from_seq`` (or the ``last`` N rows) to the head; the first row that
    does not match stops the walk. ``previous`` is the hash the row before ``from_seq`` is known
    to have (a checkpoint); otherwise it is read from that row. A walk from the start also counts
    the rows older than the chain and finds rows inserted outside it."""
    head_seq, head_hash = head()
    if last is not None:
        from_seq = max(1, head_seq - last + 1)
    from_seq = max(1, from_seq)
    full = from_seq == 1 and previous is None
    if previous is None:
        if from_seq == 1:
            previous = ""
        else:
            before = AuditEvent.objects.filter(chain_seq=from_seq - 1).values_list(*_FIELDS).first()
            if before is None:
                return Verified(0, 0, "", broken=_missing(from_seq - 1, None))
            previous = before[2]
    expected, count, first_id = from_seq, 0, None
    for row in _rows(from_seq, head_seq, batch):
        row_id, seq, stored, call_id, at, kind, actor_id, message, detail, *number = row
        if seq != expected:
            return Verified(count, expected - 1, previous, broken=_missing(expected, row))
        body = content(
            seq=seq,
            call_id=call_id,
            at=at,
            kind=kind,
            actor_id=actor_id,
            message=message,
            detail=detail,
            caller=number[0] or "",
            caller_key=number[1] or "",
            token=number[2] or "",
        )
        if row_hash(seq, previous, body) != stored:
            problem = (
                "it does not match its hash: its content was changed after it was written"
                " (or the row before it was rewritten with a new hash)"
            )
            return Verified(count, expected - 1, previous, broken=_at(row, problem))
        first_id = first_id if first_id is not None else row_id
        previous, expected, count = stored, seq + 1, count + 1
    if expected - 1 < head_seq:
        problem = (
            f"the head says the chain has {head_seq:,} rows but it ends at position "
            f"{expected - 1:,}: the newest {head_seq - expected + 1:,} rows were deleted"
        )
        return Verified(count, expected - 1, previous, broken=Break(problem, seq=expected))
    if head_seq and previous != head_hash:
        problem = f"the head's hash does not match row at position {head_seq:,}"
        return Verified(count, head_seq, previous, broken=Break(problem, seq=head_seq))
    if not full:
        return Verified(count, expected - 1, previous)
    unchained = AuditEvent.objects.filter(chain_seq__isnull=True)
    if first_id is not None:
        inserted = unchained.filter(id__gt=first_id).order_by("id").values_list(*_FIELDS).first()
        if inserted is not None:
            problem = "it is not in the chain: inserted after the chain began, outside it"
            return Verified(count, expected - 1, previous, broken=_at(inserted, problem))
    return Verified(count, expected - 1, previous, unchained=unchained.count())


def _at(row: tuple[Any, ...], problem: str) -> Break:
    return Break(problem, seq=row[1], row_id=row[0], call_id=row[3], kind=row[5], at=row[4])


def _missing(seq: int, after: tuple[Any, ...] | None) -> Break:
    if after is None:
        return Break(f"position {seq:,} is missing: its row was deleted", seq=seq)
    gap = after[1] - seq
    what = f"position {seq:,} is" if gap == 1 else f"positions {seq:,}-{after[1] - 1:,} are"
    deleted = "a row was" if gap == 1 else "rows were"
    return _at(after, f"{what} missing before it: {deleted} deleted")


# --- the sweeper's hourly check -----------------------------------------------------------------

CHECKPOINT_KEY = "pbxscreen:audit-chain:checkpoint"  # {"seq", "hash"} verified last
CHECK_EVERY_SECONDS = 3600
FIRST_CHECK_ROWS = 10_000  # without a checkpoint: the newest this many rows


def check_recent() -> Verified:
    """Verify the rows written since the last check (from its checkpoint, whose hash the cache
    kept, so rewriting the chain from there on shows), or the newest rows when there is none.
    Logs an error naming the row on a break; the checkpoint only moves on a verified chain."""
    checkpoint = cache.get(CHECKPOINT_KEY)
    result: Verified
    if isinstance(checkpoint, dict) and checkpoint.get("seq"):
        seq, known = int(checkpoint["seq"]), str(checkpoint.get("hash", ""))
        stored = AuditEvent.objects.filter(chain_seq=seq).values_list(*_FIELDS).first()
        if stored is None:
            result = Verified(0, 0, "", broken=_missing(seq, None))
        elif stored[2] != known:
            problem = "its hash changed since the last hourly check verified it"
            result = Verified(0, 0, "", broken=_at(stored, problem))
        else:
            result = verify(from_seq=seq + 1, previous=known)
    else:
        result = verify(last=FIRST_CHECK_ROWS)
    if result.broken is not None:
        log.error("%s (run manage.py verify_audit)", result.describe())
    elif result.last_seq:
        cache.set(CHECKPOINT_KEY, {"seq": result.last_seq, "hash": result.last_hash}, None)
        log.info("audit chain: %s since the last check", result.describe())
    return result


async def _check_in_background() -> None:
    await runtime.run_blocking(check_recent)


# One process an hour, in the database pool, so the sweep never waits for it. A break is logged
# by check_recent and the next check comes an hour later all the same: it names the same row.
scheduler = periodic.Periodic(
    "audit-chain-check",
    _check_in_background,
    every=lambda: CHECK_EVERY_SECONDS,
    enabled=lambda: True,
    retry_after=CHECK_EVERY_SECONDS,
    claim_every=300.0,
)
