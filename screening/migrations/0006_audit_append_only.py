"""The database refuses UPDATE and DELETE of audit rows (and TRUNCATE on PostgreSQL).

The audit trail is append-only; until now only the model code said so, and a queryset's base
manager, ``_raw_delete`` or plain SQL got past it. These triggers make the database refuse, unless
the transaction has declared a rewrite through ``screening.calls.audit_rewrite`` (the one
sanctioned path, docs/architecture.md): on PostgreSQL a transaction-local setting, on SQLite (whose
triggers cannot see temporary tables or connection state) a row in a guard table that the same
transaction writes first and removes before it commits.

SQLite drops a table's triggers when a migration rebuilds the table (most AlterField on SQLite):
a later migration that alters ``screening_auditevent`` must install them again (tests/calls/
test_audit_append_only.py fails if they are missing).
"""

from django.db import migrations

PG_INSTALL = [
    """
    CREATE FUNCTION screening_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF coalesce(current_setting('pbxscreen.audit_rewrite', true), '') = '' THEN
            RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation',
                      HINT = 'Audit rows change only through screening.calls.audit_rewrite.';
        END IF;
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END
    $$
    """,
    """
    CREATE TRIGGER screening_auditevent_append_only
    BEFORE UPDATE OR DELETE ON screening_auditevent
    FOR EACH ROW EXECUTE FUNCTION screening_audit_append_only()
    """,
    # TRUNCATE fires no row trigger: refuse it on its own.
    """
    CREATE TRIGGER screening_auditevent_no_truncate
    BEFORE TRUNCATE ON screening_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION screening_audit_append_only()
    """,
]
PG_REMOVE = [
    "DROP TRIGGER IF EXISTS screening_auditevent_no_truncate ON screening_auditevent",
    "DROP TRIGGER IF EXISTS screening_auditevent_append_only ON screening_auditevent",
    "DROP FUNCTION IF EXISTS screening_audit_append_only()",
]

_SQLITE_REFUSE = (
    "CREATE TRIGGER screening_auditevent_no_{op} BEFORE {OP} ON screening_auditevent "
    "WHEN NOT EXISTS (SELECT 1 FROM screening_audit_rewrite) "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only: {OP} on screening_auditevent "
    "refused (audit rows change only through screening.calls.audit_rewrite)'); END"
)
SQLITE_INSTALL = [
    # Holds a row only inside a transaction that declared a rewrite (never committed with one).
    "CREATE TABLE screening_audit_rewrite (reason TEXT NOT NULL)",
    _SQLITE_REFUSE.format(op="update", OP="UPDATE"),
    _SQLITE_REFUSE.format(op="delete", OP="DELETE"),
]
SQLITE_REMOVE = [
    "DROP TRIGGER IF EXISTS screening_auditevent_no_delete",
    "DROP TRIGGER IF EXISTS screening_auditevent_no_update",
    "DROP TABLE IF EXISTS screening_audit_rewrite",
]


def _run(schema_editor, statements_by_vendor):
    vendor = schema_editor.connection.vendor
    if vendor not in statements_by_vendor:
        raise NotImplementedError(
            f"the audit trail's append-only triggers are written for PostgreSQL and SQLite, "
            f"not {vendor}"
        )
    for statement in statements_by_vendor[vendor]:
        # No parameters: the PL/pgSQL body's "%" must reach the server as written.
        schema_editor.execute(statement, params=None)


def install(apps, schema_editor):
    _run(schema_editor, {"postgresql": PG_INSTALL, "sqlite": SQLITE_INSTALL})


def remove(apps, schema_editor):
    _run(schema_editor, {"postgresql": PG_REMOVE, "sqlite": SQLITE_REMOVE})


class Migration(migrations.Migration):
    dependencies = [
        ("screening", "0005_audit_kinds_without_claim_rejected"),
    ]

    operations = [migrations.RunPython(install, remove, elidable=False)]
