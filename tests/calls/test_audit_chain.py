"""The audit chain: every row the product writes joins it and verifies; a row changed, deleted or
inserted behind the product's back (raw SQL, past the append-only triggers, as someone with the
database owner's rights could) is named by ``verify_audit`` and by the sweeper's hourly check;
the pseudonymised form retention writes leaves it verified. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from screening.calls import audit_rewrite, chain, intake, pseudonyms, store
from screening.models import AuditChainHead, AuditEvent, AuditKind, Call
from tests.support.calls import incoming
from tests.support.live import ROOT, database_url, make_user

pytestmark = pytest.mark.django_db(transaction=True)

CALLER = "07700900123"


@pytest.fixture
def calls() -> list[Call]:
    """Three calls with rows of several kinds: one by an operator, details with the values a
    database stores differently (key order, floats, unicode, nested lists)."""
    alice = make_user("alice")
    made = []
    for i in range(3):
        call = intake.receive_call(incoming(f"1700000000.{i}"), via="test").call
        store.audit(
            call,
            AuditKind.CLAIMED,
            f"Alice claimed the call from {CALLER} — Zoë ☎",
            actor=alice,
            z_last=1,
            a_first={"b": [1, 2.5, [None, True]], "a": "0.1"},
            floats=[0.1, 1.0, 1e23, -0.0, 1e-7, 123456789.125],
            numbers=[CALLER, f"+44{CALLER[1:]}"],
        )
        made.append(call)
    return made


def rows() -> list[AuditEvent]:
    return list(AuditEvent.objects.order_by("chain_seq"))


@contextmanager
def past_the_triggers() -> Iterator[Any]:
    """A cursor that may UPDATE and DELETE audit rows, as the database's owner could: the
    append-only triggers are switched off for this session only (PostgreSQL) or their guard row
    is written by hand (SQLite)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = replica")
            try:
                yield cursor
            finally:
                cursor.execute("SET session_replication_role = DEFAULT")
        else:
            cursor.execute(f"INSERT INTO {audit_rewrite.SQLITE_GUARD_TABLE} (reason) VALUES ('x')")
            try:
                yield cursor
            finally:
                cursor.execute(f"DELETE FROM {audit_rewrite.SQLITE_GUARD_TABLE}")


def raw(sql: str, params: list[Any]) -> None:
    with past_the_triggers() as cursor:
        cursor.execute(
            sql.replace("{audit}", connection.ops.quote_name("screening_auditevent")), params
        )


def verify_audit(*args: str) -> subprocess.CompletedProcess[str]:
    """``manage.py verify_audit`` as an operator would run it, in a process of its own."""
    env = {"DATABASE_URL": database_url(), "PATH": "/usr/bin:/bin", "DEV_TOOLS": "false"}
    return subprocess.run(
        [sys.executable, "manage.py", "verify_audit", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_row_the_product_writes_joins_the_chain_and_verifies(calls: list[Call]) -> None:
    written = rows()
    assert [r.chain_seq for r in written] == list(range(1, len(written) + 1))
    assert AuditChainHead.objects.get(pk=1).seq == len(written)
    assert all(len(r.chain_hash) == 64 for r in written)
    result = chain.verify(batch=2)  # several batches
    assert result.ok, result.describe()
    assert result.rows == len(written)
    done = verify_audit()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{len(written)} rows verified"


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("message", "Alice claimed nothing"),
        ("detail", '{"z_last": 2}'),
        ("kind", AuditKind.REFUSED.value),
        ("actor_id", None),
        ("chain_hash", "0" * 64),
    ],
)
def test_a_row_changed_with_raw_sql_is_named(calls: list[Call], column: str, value: Any) -> None:
    target = AuditEvent.objects.filter(kind=AuditKind.CLAIMED).order_by("chain_seq")[1]
    raw(f"UPDATE {{audit}} SET {column} = %s WHERE id = %s", [value, target.pk])
    result = chain.verify()
    assert result.broken is not None
    assert (result.broken.row_id, result.broken.seq) == (target.pk, target.chain_seq)
    assert result.rows == target.chain_seq - 1
    done = verify_audit()
    assert done.returncode == 1
    assert f"audit chain broken at row {target.pk} (position {target.chain_seq}, call " in (
        done.stderr
    )
    assert "content was changed" in done.stderr


def test_a_changed_time_or_call_is_named(calls: list[Call]) -> None:
    first, second = rows()[2], rows()[6]
    raw("UPDATE {audit} SET at = %s WHERE id = %s", [first.at + timedelta(seconds=1), first.pk])
    assert chain.verify().broken.row_id == first.pk
    raw("UPDATE {audit} SET at = %s WHERE id = %s", [first.at, first.pk])  # put back
    assert chain.verify().ok
    raw("UPDATE {audit} SET call_id = %s WHERE id = %s", [calls[0].pk, second.pk])
    assert chain.verify().broken.row_id == second.pk


def test_a_deleted_row_is_named_by_its_position(calls: list[Call]) -> None:
    written = rows()
    gone, after = written[3], written[4]
    raw("DELETE FROM {audit} WHERE id = %s", [gone.pk])
    broken = chain.verify().broken
    assert broken is not None
    assert (broken.row_id, broken.seq) == (after.pk, after.chain_seq)
    done = verify_audit()
    assert done.returncode == 1
    assert f"position {gone.chain_seq} is missing before it: a row was deleted" in done.stderr


def test_deleting_the_newest_rows_is_reported(calls: list[Call]) -> None:
    written = rows()
    raw("DELETE FROM {audit} WHERE id = %s", [written[-1].pk])
    done = verify_audit()
    assert done.returncode == 1
    assert (
        f"the head says the chain has {len(written)} rows but it ends at position "
        f"{len(written) - 1}: the newest 1 rows were deleted" in done.stderr
    )


def test_a_row_inserted_outside_the_chain_is_named(calls: list[Call]) -> None:
    forged = AuditEvent.objects.create(call=calls[0], kind=AuditKind.ACCEPTED, message="Accepted")
    broken = chain.verify().broken
    assert broken is not None
    assert (broken.row_id, broken.seq) == (forged.pk, None)
    assert "not in the chain" in verify_audit().stderr


def test_rows_older_than_the_chain_are_counted_apart() -> None:
    # Rows written before the chain existed (an install upgraded to it) have no place in it.
    for kind in (AuditKind.RETENTION, AuditKind.ERASED):
        AuditEvent.objects.create(call=None, kind=kind, message="before the chain")
    intake.receive_call(incoming("1700000002.1"), via="test")
    chained = AuditEvent.objects.filter(chain_seq__isnull=False).count()
    done = verify_audit()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{chained} rows verified (plus 2 older rows that predate the chain, unchained)"
    )


def test_verify_walks_a_part_of_the_chain(calls: list[Call]) -> None:
    total = AuditEvent.objects.count()
    assert verify_audit("--last", "3").stdout.strip() == "3 rows verified"
    assert chain.verify(from_seq=total - 4).rows == 5
    refused = verify_audit("--last", "0")
    assert refused.returncode != 0
    assert "--last must be at least 1" in refused.stderr


def test_the_pseudonymised_form_is_what_the_chain_hashes(calls: list[Call]) -> None:
    """What retention and erasure write (the number replaced by the call's pseudonym in the
    rows and in the call) leaves the chain verified; anything else changed breaks it."""
    call = calls[1]
    assert call.caller_token == pseudonyms.for_caller(call.caller, call.caller_key)
    own = list(AuditEvent.objects.filter(call=call).order_by("chain_seq"))
    assert any(CALLER in r.message or CALLER in str(r.detail) for r in own)
    with audit_rewrite.rewriting("test: pseudonymise one call") as rewrite:
        for row in own:
            message, detail = pseudonyms.scrub_audit(
                row.message,
                row.detail,
                caller=call.caller,
                caller_key=call.caller_key,
                token=call.caller_token,
            )
            rewrite.update(AuditEvent.objects.filter(pk=row.pk), message=message, detail=detail)
        Call.objects.filter(pk=call.pk).update(
            caller=call.caller_token, caller_key=call.caller_token
        )
    rewritten = list(AuditEvent.objects.filter(call=call).order_by("chain_seq"))
    assert not any(CALLER in r.message or CALLER[1:] in str(r.detail) for r in rewritten)
    assert any(call.caller_token in r.message for r in rewritten)
    assert chain.verify().ok, chain.verify().describe()
    # Anything but the pseudonym: broken at that row.
    target = next(r for r in rewritten if call.caller_token in r.message)
    with audit_rewrite.rewriting("test: something else") as rewrite:
        rewrite.update(
            AuditEvent.objects.filter(pk=target.pk),
            message=target.message.replace(call.caller_token, "anon-00000000000000000000"),
        )
    assert chain.verify().broken.row_id == target.pk


def test_a_call_stored_before_pseudonyms_gets_its_pseudonym_when_audited(calls: list[Call]) -> None:
    call = calls[2]
    Call.objects.filter(pk=call.pk).update(caller_token="")
    old = Call.objects.get(pk=call.pk)
    store.audit(old, AuditKind.NOTE, f"Noted about {CALLER}")
    assert Call.objects.get(pk=call.pk).caller_token == pseudonyms.for_caller(
        call.caller, call.caller_key
    )
    assert chain.verify().ok


def test_rows_about_the_record_itself_join_the_chain(calls: list[Call]) -> None:
    store.record(AuditEvent(call=None, kind=AuditKind.ERASED, message="A number was erased"))
    assert chain.verify().ok
    row = AuditEvent.objects.get(kind=AuditKind.ERASED)
    raw("UPDATE {audit} SET message = %s WHERE id = %s", ["Nothing happened", row.pk])
    assert chain.verify().broken.row_id == row.pk


def test_the_chain_goes_on_after_its_head_row_is_lost(calls: list[Call]) -> None:
    AuditChainHead.objects.all().delete()
    store.audit(calls[0], AuditKind.NOTE, "after the head was lost")
    assert AuditChainHead.objects.get(pk=1).seq == AuditEvent.objects.count()
    assert chain.verify().ok
    call_command("flush", interactive=False, verbosity=0)
    fresh = intake.receive_call(incoming("1700000001.1"), via="test").call
    positions = list(AuditEvent.objects.filter(call=fresh).values_list("chain_seq", flat=True))
    assert sorted(positions) == list(range(1, len(positions) + 1))  # a new chain from 1
    assert chain.verify().ok


def test_the_hourly_check_logs_an_error_naming_a_changed_row(
    calls: list[Call], caplog: pytest.LogCaptureFixture
) -> None:
    assert chain.scheduler.claim()
    assert not chain.scheduler.claim()  # one process per hour
    first = chain.check_recent()
    assert first.ok
    assert first.last_seq == AuditEvent.objects.count()
    # New rows since: checked from the checkpoint on.
    for i in range(3):
        store.audit(calls[0], AuditKind.NOTE, f"note {i}", at=timezone.now())
    newer = rows()[-2]
    raw("UPDATE {audit} SET message = %s WHERE id = %s", ["rewritten", newer.pk])
    with caplog.at_level(logging.ERROR, logger="screening.calls.chain"):
        result = chain.check_recent()
    assert result.rows == 1  # only the rows after the checkpoint were read
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"audit chain broken at row {newer.pk} (position {newer.chain_seq}" in errors[0]


def test_the_hourly_check_notices_a_rewritten_chain_behind_its_checkpoint(
    calls: list[Call], caplog: pytest.LogCaptureFixture
) -> None:
    assert chain.check_recent().ok
    newest = rows()[-1]
    raw("UPDATE {audit} SET chain_hash = %s WHERE id = %s", ["f" * 64, newest.pk])
    with caplog.at_level(logging.ERROR, logger="screening.calls.chain"):
        assert not chain.check_recent().ok
    assert f"row {newest.pk} (position {newest.chain_seq}" in caplog.text
    assert "its hash changed since the last hourly check" in caplog.text


def test_the_admin_shows_a_rows_chain_fields_read_only(calls: list[Call], admin_web: Any) -> None:
    row = rows()[1]
    page = admin_web.get(f"/admin/screening/auditevent/{row.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert row.chain_hash in html
    assert 'name="chain_hash"' not in html
    assert 'name="chain_seq"' not in html
    listing = admin_web.get("/admin/screening/auditevent/").content.decode()
    assert "column-chain_seq" in listing


def test_the_sweepers_hourly_task_checks_once_per_hour_and_logs_a_break(
    calls: list[Call], caplog: pytest.LogCaptureFixture
) -> None:
    target = rows()[3]
    raw("UPDATE {audit} SET message = %s WHERE id = %s", ["rewritten", target.pk])
    with caplog.at_level(logging.ERROR, logger="screening.calls.chain"):
        asyncio.run(chain.scheduler._claimed_run())  # what the sweeper's tick starts
        asyncio.run(chain.scheduler._claimed_run())  # another process, same hour: no second check
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"audit chain broken at row {target.pk} (position {target.chain_seq}" in errors[0]
