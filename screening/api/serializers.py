"""What the API sends and takes. Reads are built from the report modules' own rows
(screening.reports.audit.AuditRow, timeline.Step, stats.Stats); writes of rules and contacts are
validated as admin's form validates them (``AdminValidation``: the model's fields and its
``clean()``), so the API accepts exactly what admin accepts, with the same messages per field."""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import serializers

from screening.models import Contact, ContactNumber, Rule

# --- Calls ----------------------------------------------------------------------------------


class CallRowSerializer(serializers.Serializer):
    """One call as the audit log lists it (screening.reports.audit.AuditRow)."""

    id = serializers.IntegerField(source="pk")
    received_at = serializers.DateTimeField()
    deadline = serializers.DateTimeField()
    claimed_at = serializers.DateTimeField(allow_null=True)
    caller = serializers.CharField()
    caller_name = serializers.CharField()
    called = serializers.CharField()
    trunk = serializers.CharField(help_text="The trunk's label, or its name")
    trunk_name = serializers.CharField()
    status = serializers.CharField()
    status_label = serializers.CharField()
    decided_by_kind = serializers.CharField()
    decided_by = serializers.CharField(help_text="Who or what decided, in words")
    operator = serializers.CharField(source="username", allow_null=True)
    rule_id = serializers.IntegerField(allow_null=True)
    decision_ms = serializers.IntegerField(allow_null=True, help_text="Received → claimed")
    pbx_errcode = serializers.IntegerField(allow_null=True)
    pbx_errmsg = serializers.CharField()
    pbx_outcome = serializers.CharField()
    outcome_mismatch = serializers.BooleanField()
    reason = serializers.CharField()
    reason_note = serializers.CharField()


class CallPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next page, or null at the end")
    previous = serializers.URLField(allow_null=True, help_text="The previous page, or null")
    results = CallRowSerializer(many=True)


class StepSerializer(serializers.Serializer):
    """One audit row of a call's timeline (screening.reports.timeline.Step)."""

    at = serializers.DateTimeField()
    offset_ms = serializers.IntegerField(help_text="Since the call arrived")
    kind = serializers.CharField()
    kind_label = serializers.CharField()
    actor = serializers.CharField()
    message = serializers.CharField()
    detail = serializers.SerializerMethodField()
    alert = serializers.BooleanField()

    def get_detail(self, step: Any) -> dict[str, str]:
        """The row's details as the page shows them: label → text, in the page's order (the
        labels are in the request's language, so made plain text before JSON sees them)."""
        return {str(label): text for label, text in step.detail}


class CallDetailSerializer(CallRowSerializer):
    timeline = StepSerializer(many=True)


class DecideSerializer(serializers.Serializer):
    """The body of accept / refuse (JSON or form fields), as the dashboard takes it."""

    reason = serializers.ChoiceField(
        choices=["spam", "wrong_number", "abusive", "other"],
        required=False,
        help_text="Refuse only",
    )
    note = serializers.CharField(required=False, max_length=500, help_text="Refuse only")


class DecidedSerializer(serializers.Serializer):
    """The dashboard's answer to a decision: 200 carried out, 409 someone else decided or the
    window is closing, 410 gone, 502 the PBX did not carry it out."""

    ok = serializers.BooleanField()
    status = serializers.CharField(required=False)
    status_label = serializers.CharField(required=False)
    decided_by = serializers.CharField(required=False)
    pbx_errcode = serializers.IntegerField(allow_null=True, required=False)
    pbx_errmsg = serializers.CharField(required=False)
    pbx_round_trip_ms = serializers.FloatField(allow_null=True, required=False)
    error = serializers.CharField(required=False)
    call = serializers.DictField(required=False)


# --- Statistics -----------------------------------------------------------------------------


class CountsSerializer(serializers.Serializer):
    offered = serializers.IntegerField()
    accepted = serializers.IntegerField()
    refused = serializers.IntegerField()
    expired = serializers.IntegerField()
    gone = serializers.IntegerField()
    failed = serializers.IntegerField()
    auto = serializers.IntegerField(help_text="Decided by rules, trunk policies and fallbacks")


class TimingSerializer(serializers.Serializer):
    decisions = serializers.IntegerField()
    median_ms = serializers.FloatField(allow_null=True)
    p90_ms = serializers.FloatField(allow_null=True)


class BucketSerializer(serializers.Serializer):
    start = serializers.SerializerMethodField()
    label = serializers.CharField()
    counts = CountsSerializer()
    timing = TimingSerializer()
    unscreened = serializers.IntegerField()

    def get_start(self, bucket: Any) -> str:
        """The bucket's local day or hour (ISO 8601, no offset: the server's time zone)."""
        return bucket.key.isoformat()


class GroupSerializer(serializers.Serializer):
    label = serializers.CharField()
    counts = CountsSerializer()


class OperatorStatsSerializer(serializers.Serializer):
    label = serializers.CharField()
    decisions = serializers.IntegerField()
    accepted = serializers.IntegerField()
    refused = serializers.IntegerField()
    failed = serializers.IntegerField()
    close_calls = serializers.IntegerField()
    timing = TimingSerializer()


class StatsSerializer(serializers.Serializer):
    start = serializers.DateField(source="period.first")
    end = serializers.DateField(source="period.last", help_text="Inclusive")
    per = serializers.CharField(source="period.by")
    total = CountsSerializer()
    timing = TimingSerializer()
    unscreened = serializers.IntegerField()
    buckets = BucketSerializer(many=True)
    by_trunk = GroupSerializer(many=True)
    by_operator = OperatorStatsSerializer(many=True)


# --- Rules and contacts: admin's validation ---------------------------------------------------


class AdminValidation(serializers.ModelSerializer):
    """Runs on writes what admin's ModelForm runs after its fields: the model's ``full_clean()``
    (field validators and ``Model.clean()``) over the writable fields, and the uniqueness checks,
    so the API and admin accept the same values, with the model's messages per field."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        model = self.Meta.model
        candidate = copy.copy(self.instance) if self.instance is not None else model()
        concrete = {f.name for f in model._meta.concrete_fields}
        for name, value in attrs.items():
            if name in concrete:
                setattr(candidate, name, value)
        writable = {
            name for name, field in self.fields.items() if not field.read_only and name in concrete
        }
        try:
            candidate.full_clean(exclude=concrete - writable)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(
                {
                    ("non_field_errors" if name == NON_FIELD_ERRORS else name): list(errors)
                    for name, errors in exc.message_dict.items()
                }
            ) from exc
        return attrs


class RuleSerializer(AdminValidation):
    class Meta:
        model = Rule
        fields = (
            "id",
            "pattern",
            "match",
            "trunk",
            "action",
            "expires_at",
            "enabled",
            "note",
            "reason",
            "normalised",
            "hit_count",
            "last_hit_at",
            "created_by",
            "created_at",
            "source_call",
            "pbx_blocked_at",
        )
        read_only_fields = (
            "normalised",
            "hit_count",
            "last_hit_at",
            "created_by",
            "created_at",
            "source_call",
            "pbx_blocked_at",
        )


class ContactNumberSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContactNumber
        fields = ("id", "number", "label", "normalised")
        read_only_fields = ("id", "normalised")

    def validate_number(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError(_("Type the number."))
        return value.strip()


MAX_NUMBERS = 50


class ContactSerializer(AdminValidation):
    numbers = ContactNumberSerializer(
        many=True,
        required=False,
        help_text=gettext_lazy("Replaces all of the contact's numbers when given"),
    )

    class Meta:
        model = Contact
        fields = (
            "id",
            "name",
            "organisation",
            "note",
            "source",
            "external_id",
            "created_at",
            "updated_at",
            "numbers",
        )
        read_only_fields = ("source", "external_id", "created_at", "updated_at")

    def validate_numbers(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(value) > MAX_NUMBERS:
            raise serializers.ValidationError(
                _("At most %(n)d numbers per contact.") % {"n": MAX_NUMBERS}
            )
        return value

    def create(self, validated_data: dict[str, Any]) -> Contact:
        numbers = validated_data.pop("numbers", [])
        with transaction.atomic():
            contact = super().create(validated_data)
            self._write_numbers(contact, numbers)
        return contact

    def update(self, instance: Contact, validated_data: dict[str, Any]) -> Contact:
        numbers = validated_data.pop("numbers", None)
        with transaction.atomic():
            contact = super().update(instance, validated_data)
            if numbers is not None:
                contact.numbers.all().delete()
                self._write_numbers(contact, numbers)
        return contact

    def _write_numbers(self, contact: Contact, numbers: list[dict[str, Any]]) -> None:
        for number in numbers:  # one by one: save() fills in the normalised form
            ContactNumber(contact=contact, **number).save()
        # The prefetched numbers of the request's queryset are stale now.
        getattr(contact, "_prefetched_objects_cache", {}).pop("numbers", None)
