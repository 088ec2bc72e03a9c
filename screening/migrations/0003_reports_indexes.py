"""PostgreSQL-only indexes for the supervisor reports (screening.reports).

- ``call_received_cover``: received_at plus the columns the statistics count, so a month of
  statistics is an index-only scan instead of a million heap fetches.
- ``call_decision_time``: the audit list's "Decision time" sort (an expression with a sentinel for
  calls nobody decided, exactly as screening.reports.audit.Sort builds it), so its pages seek too.

Built CONCURRENTLY (outside a transaction) so a live, large call table stays writable. They change
no model state: SQLite, the demo's database, needs neither (and cannot INCLUDE columns).
"""

from django.db import migrations

INDEXES = {
    "call_received_cover": (
        "ON screening_call (received_at) INCLUDE "
        "(trunk_id, status, decided_by_kind, decided_by_id, claimed_at, deadline)"
    ),
    "call_decision_time": (
        "ON screening_call "
        "((COALESCE((claimed_at - received_at), '-1 days'::interval)), id)"
    ),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, definition in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("screening", "0002_rules_fallback_presence_outcome"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
