"""The trustworthy record: the audit chain (its head row and each row's place and hash), audit rows
about the record itself (no call), the caller's pseudonym on each call, link outages and
unscreened calls, and what the PBX's Trunk Status Monitor holds per trunk.

Adding a unique column and making ``call`` nullable rebuild ``screening_auditevent`` on SQLite,
which drops its append-only triggers (migration 0006): they are installed again last.
"""

import importlib

import django.db.models.deletion
from django.db import migrations, models

append_only = importlib.import_module("screening.migrations.0006_audit_append_only")


def create_chain_head(apps, schema_editor):
    apps.get_model("screening", "AuditChainHead").objects.using(
        schema_editor.connection.alias
    ).get_or_create(pk=1)


def reinstall_sqlite_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        # The guard table is not rebuilt: only the triggers go with the old table.
        statements = [s for s in append_only.SQLITE_REMOVE if s.startswith("DROP TRIGGER")]
        statements += [s for s in append_only.SQLITE_INSTALL if s.startswith("CREATE TRIGGER")]
        for statement in statements:
            schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("screening", "0007_caller_context"),
    ]

    operations = [
        migrations.CreateModel(
            name="AuditChainHead",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("seq", models.BigIntegerField(default=0)),
                ("hash", models.CharField(blank=True, max_length=64)),
            ],
        ),
        migrations.CreateModel(
            name="LinkOutage",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("started_at", models.DateTimeField(db_index=True)),
                ("ended_at", models.DateTimeField(blank=True, null=True)),
                ("reconciled_at", models.DateTimeField(blank=True, null=True)),
                ("offered", models.PositiveIntegerField(default=0)),
                ("unscreened", models.PositiveIntegerField(default=0)),
                ("error", models.CharField(blank=True, max_length=512)),
            ],
            options={
                "ordering": ("-started_at",),
            },
        ),
        migrations.AddField(
            model_name="auditevent",
            name="chain_hash",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="chain_seq",
            field=models.BigIntegerField(blank=True, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="call",
            name="caller_token",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="trunk",
            name="pbx_call_status",
            field=models.BooleanField(
                editable=False, help_text="Call Status on at the PBX", null=True
            ),
        ),
        migrations.AddField(
            model_name="trunk",
            name="pbx_control_inbound",
            field=models.BooleanField(
                editable=False, help_text="Control Inbound Call on at the PBX", null=True
            ),
        ),
        migrations.AddField(
            model_name="trunk",
            name="pbx_monitor_checked_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="call",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="audit_events",
                to="screening.call",
            ),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="kind",
            field=models.CharField(
                choices=[
                    ("received", "Received from the PBX"),
                    ("duplicate", "Duplicate delivery ignored"),
                    ("trunk_created", "Unknown trunk created"),
                    ("pushed", "Pushed to operators"),
                    ("claimed", "Claimed for a decision"),
                    ("pbx_request", "Request sent to the PBX"),
                    ("pbx_response", "PBX answered"),
                    ("accepted", "Accepted"),
                    ("refused", "Refused"),
                    ("expired", "Expired"),
                    ("gone", "Gone"),
                    ("failed", "Failed"),
                    ("pbx_state", "PBX call state"),
                    ("pbx_cdr", "PBX call record"),
                    ("mismatch", "PBX outcome contradicts our record"),
                    ("caller_name", "Caller identified"),
                    ("reason", "Refusal reason"),
                    ("note", "Note added"),
                    ("rule_created", "Rule created from the card"),
                    ("unscreened", "Offered while the event link was down"),
                    ("retention", "Old numbers pseudonymised"),
                    ("erased", "A number was erased"),
                ],
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="call",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Waiting for an operator"),
                    ("deciding", "Decision being sent to the PBX"),
                    ("accepted", "Accepted"),
                    ("refused", "Refused"),
                    ("expired", "Expired: the PBX routed the call itself"),
                    ("gone", "Gone: caller hung up or channel not found"),
                    ("failed", "Failed: the PBX did not carry out the decision"),
                    ("unscreened", "Unscreened: offered while the event link was down"),
                ],
                default="pending",
                max_length=16,
            ),
        ),
        migrations.RunPython(create_chain_head, migrations.RunPython.noop, elidable=False),
        migrations.RunPython(reinstall_sqlite_triggers, migrations.RunPython.noop, elidable=False),
    ]
