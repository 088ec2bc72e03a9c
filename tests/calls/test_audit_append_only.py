"""The audit trail is append-only in the database itself, not only in the model code: every way
of changing or deleting a row fails and leaves the trail as it was, except the one sanctioned,
declared rewrite (screening.calls.audit_rewrite). Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import IntegrityError, connection, models, transaction
from django.db.models import ProtectedError
from django.test import Client

from screening.calls import audit_rewrite, intake, store
from screening.models import AuditEvent, AuditKind, Call
from tests.support.calls import incoming
from tests.support.live import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def call() -> Call:
    """A stored call with a few audit rows, one of them by an operator."""
    stored = intake.receive_call(incoming(), via="test").call
    store.audit(stored, AuditKind.CLAIMED, "Claimed", actor=make_user("alice"))
    return stored


def trail() -> list[tuple[Any, ...]]:
    """Every audit row as stored, to compare before and after."""
    return list(
        AuditEvent.objects.order_by("id").values_list("id", "call_id", "kind", "message", "detail")
    )


def table() -> str:
    return connection.ops.quote_name(AuditEvent._meta.db_table)


def _raw(sql: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql)


def rows_of(call: Call) -> models.QuerySet[AuditEvent]:
    return AuditEvent.objects.filter(call=call)


def _save_existing(call: Call, **kwargs: Any) -> None:
    row = rows_of(call).first()
    assert row is not None
    row.message = "rewritten"
    models.Model.save(row, **kwargs)


def _bulk_update(call: Call) -> None:
    rows = list(rows_of(call))
    for row in rows:
        row.message = "rewritten"
    AuditEvent._base_manager.bulk_update(rows, ["message"])


# Every way into the table that gets past the model code: the database must refuse each one.
DATABASE_REFUSES: dict[str, Callable[[Call], Any]] = {
    "base manager update()": lambda call: AuditEvent._base_manager.filter(call=call).update(
        message="rewritten"
    ),
    "base manager delete()": lambda call: AuditEvent._base_manager.filter(call=call).delete(),
    "base manager bulk_update()": _bulk_update,
    "QuerySet.update past the override": lambda call: models.QuerySet.update(
        rows_of(call), message="rewritten"
    ),
    "QuerySet.delete past the override": lambda call: models.QuerySet.delete(rows_of(call)),
    "save() of an existing row": _save_existing,
    "save(force_update=True)": lambda call: _save_existing(call, force_update=True),
    "Model.delete past the override": lambda call: models.Model.delete(rows_of(call).first()),
    "_raw_delete": lambda call: rows_of(call)._raw_delete(connection.alias),
    "raw SQL UPDATE": lambda call: _raw(f"UPDATE {table()} SET message = 'rewritten'"),
    "raw SQL DELETE": lambda call: _raw(f"DELETE FROM {table()}"),
    "raw SQL DELETE of one row": lambda call: _raw(
        f"DELETE FROM {table()} WHERE id = {rows_of(call).first().pk}"
    ),
    # PostgreSQL's TRUNCATE fires no row trigger; SQLite has none (its "truncate optimisation"
    # of a DELETE without WHERE is off for a table with triggers).
    "TRUNCATE": lambda call: _raw(
        f"TRUNCATE {table()} CASCADE"
        if connection.vendor == "postgresql"
        else f"DELETE FROM {table()} WHERE 1"
    ),
}


@pytest.mark.parametrize("attempt", DATABASE_REFUSES.values(), ids=DATABASE_REFUSES.keys())
def test_the_database_refuses_every_change_to_audit_rows(
    call: Call, attempt: Callable[[Call], Any]
) -> None:
    before = trail()
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        attempt(call)
    assert trail() == before


# The model code refuses first, with a plain error, before anything reaches the database.
MODEL_REFUSES: dict[str, Callable[[Call], Any]] = {
    "queryset update()": lambda call: rows_of(call).update(message="rewritten"),
    "queryset delete()": lambda call: rows_of(call).delete(),
    "bulk_update()": lambda call: AuditEvent.objects.bulk_update(list(rows_of(call)), ["message"]),
    "save() of an existing row": lambda call: rows_of(call).first().save(),
    "delete()": lambda call: rows_of(call).first().delete(),
}


@pytest.mark.parametrize("attempt", MODEL_REFUSES.values(), ids=MODEL_REFUSES.keys())
def test_the_model_code_refuses_first(call: Call, attempt: Callable[[Call], Any]) -> None:
    before = trail()
    with pytest.raises(TypeError, match="append-only"):
        attempt(call)
    assert trail() == before


def test_a_declared_rewrite_updates_and_deletes_then_the_trail_is_closed_again(call: Call) -> None:
    other = intake.receive_call(incoming("1700000000.2"), via="test").call
    mine, others = rows_of(call).count(), rows_of(other).count()
    assert mine > 1
    assert others > 1
    with audit_rewrite.rewriting("test: pseudonymise one call, delete another") as rewrite:
        assert rewrite.update(rows_of(call), message="(erased)", detail={}) == mine
        assert rewrite.delete(rows_of(other)) == others
    assert set(rows_of(call).values_list("message", flat=True)) == {"(erased)"}
    assert not rows_of(other).exists()
    # Closed again, on this connection too.
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        _raw(f"UPDATE {table()} SET message = 'again'")
    assert set(rows_of(call).values_list("message", flat=True)) == {"(erased)"}


def test_a_rewrite_inside_a_longer_transaction_ends_with_its_block(call: Call) -> None:
    count = rows_of(call).count()
    with transaction.atomic():
        with audit_rewrite.rewriting("test: nested") as rewrite:
            rewrite.update(rows_of(call), message="(erased)")
        # Same transaction, after the block: refused again.
        with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
            _raw(f"DELETE FROM {table()}")
    assert rows_of(call).count() == count
    assert set(rows_of(call).values_list("message", flat=True)) == {"(erased)"}


def test_a_failed_rewrite_changes_nothing_and_leaves_the_trail_closed(call: Call) -> None:
    before = trail()

    def fails_half_way() -> None:
        with audit_rewrite.rewriting("test: fails") as rewrite:
            rewrite.update(rows_of(call), message="(erased)")
            raise RuntimeError("stop half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        fails_half_way()
    assert trail() == before
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        _raw(f"UPDATE {table()} SET message = 'again'")
    assert trail() == before


def test_a_rewrite_needs_a_reason(call: Call) -> None:
    with pytest.raises(ValueError, match="reason"), audit_rewrite.rewriting("  "):
        pass


def test_flush_empties_the_audit_trail_through_the_declared_rewrite(call: Call) -> None:
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.exists()
    assert not Call.objects.exists()
    # And the trail is closed again for whatever comes next.
    fresh = intake.receive_call(incoming("1700000000.3"), via="test").call
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        _raw(f"DELETE FROM {table()}")
    assert rows_of(fresh).exists()


def test_a_user_with_audit_rows_cannot_be_deleted_and_admin_says_why(call: Call) -> None:
    alice = get_user_model().objects.get(username="alice")
    with pytest.raises(ProtectedError):
        alice.delete()
    admin = Client()
    admin.force_login(make_user("root", group=None, is_staff=True, is_superuser=True))
    url = f"/admin/auth/user/{alice.pk}/delete/"
    page = admin.get(url)
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", page.content.decode())
    assert "Cannot delete user" in text
    assert "audit event" in text.lower()
    answer = admin.post(url, {"post": "yes"})
    assert answer.status_code == 200
    assert get_user_model().objects.filter(pk=alice.pk).exists()
    # Calls and audit rows offer no delete in admin at all.
    before = trail()
    row = rows_of(call).first()
    for url in (
        f"/admin/screening/call/{call.pk}/delete/",
        f"/admin/screening/auditevent/{row.pk}/delete/",
    ):
        assert admin.post(url, {"post": "yes"}).status_code == 403
    assert trail() == before
