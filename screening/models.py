"""Trunks, calls (one row per 30016) and the append-only audit trail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone


class Trunk(models.Model):
    """A PBX trunk, matched by the name the PBX puts in ``trunk_name``."""

    name = models.CharField(
        max_length=128, unique=True, help_text="Trunk name exactly as on the PBX"
    )
    label = models.CharField(max_length=128, blank=True, help_text="What operators see")
    screening_enabled = models.BooleanField(
        default=True,
        help_text="Off: calls on this trunk are accepted at once, without an operator.",
    )
    operator_group = models.ForeignKey(
        Group,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Only members of this group see and decide its calls (blank: all operators).",
    )
    auto_created = models.BooleanField(
        default=False,
        editable=False,
        help_text="Created because a call arrived on an unknown trunk",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.display_name

    @property
    def display_name(self) -> str:
        return self.label or self.name


class CallStatus(models.TextChoices):
    PENDING = "pending", "Waiting for an operator"
    DECIDING = "deciding", "Decision being sent to the PBX"
    ACCEPTED = "accepted", "Accepted"
    REFUSED = "refused", "Refused"
    EXPIRED = "expired", "Expired: the PBX routed the call itself"
    GONE = "gone", "Gone: caller hung up or channel not found"
    FAILED = "failed", "Failed: the PBX did not carry out the decision"


OPEN_STATUSES = (CallStatus.PENDING, CallStatus.DECIDING)
TERMINAL_STATUSES = tuple(s for s in CallStatus if s not in OPEN_STATUSES)


class Decision(models.TextChoices):
    ACCEPT = "accept", "Accept"
    REFUSE = "refuse", "Refuse"


class DecidedBy(models.TextChoices):
    OPERATOR = "operator", "Operator"
    TRUNK_POLICY = "trunk_policy", "Trunk policy"
    RULE = "rule", "Screening rule"
    PBX_TIMEOUT = "pbx_timeout", "PBX (window passed)"
    CALLER = "caller", "Caller hung up"


class Call(models.Model):
    """One inbound call offered by the PBX through event 30016."""

    pbx_call_id = models.CharField(max_length=64)
    channel_id = models.CharField(max_length=256)
    pbx_sn = models.CharField(max_length=64, blank=True)
    caller = models.CharField(max_length=64, blank=True, db_index=True)
    called = models.CharField(max_length=64, blank=True)
    trunk = models.ForeignKey(Trunk, on_delete=models.PROTECT, related_name="calls")

    received_at = models.DateTimeField(db_index=True)
    deadline = models.DateTimeField(
        help_text="When the PBX stops waiting and routes the call itself"
    )

    status = models.CharField(max_length=16, choices=CallStatus.choices, default=CallStatus.PENDING)
    # Bumped on every state change, so clients can drop a push that arrives after a newer one.
    version = models.PositiveIntegerField(default=1)
    decision = models.CharField(max_length=8, choices=Decision.choices, blank=True)
    decided_by_kind = models.CharField(max_length=16, choices=DecidedBy.choices, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    pbx_errcode = models.IntegerField(null=True, blank=True)
    pbx_errmsg = models.CharField(max_length=256, blank=True)
    pbx_round_trip_ms = models.FloatField(null=True, blank=True)
    # The caller's history as it stood when the call arrived, so pushes and snapshots need no
    # per-call queries.
    history = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("-received_at",)
        constraints: ClassVar[list[Any]] = [
            # A retried webhook or a replayed frame must not create a second call.
            models.UniqueConstraint(
                fields=("pbx_call_id", "channel_id"), name="call_unique_pbx_ids"
            ),
        ]
        indexes: ClassVar[list[Any]] = [
            models.Index(fields=("status", "deadline"), name="call_status_deadline"),
            models.Index(fields=("caller", "-received_at"), name="call_caller_recent"),
        ]
        permissions = (
            ("decide_call", "Can accept or refuse live calls"),
            ("view_audit", "Can review the audit log and statistics"),
        )

    def __str__(self) -> str:
        return f"{self.caller or 'withheld'} → {self.called} ({self.pbx_call_id})"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def last_useful_moment(self) -> Any:
        """The last moment a decision can still be sent: the deadline minus the safety margin."""
        return self.deadline - timedelta(seconds=settings.SCREEN_SAFETY_MARGIN_SECONDS)


class AuditKind(models.TextChoices):
    RECEIVED = "received", "Received from the PBX"
    DUPLICATE = "duplicate", "Duplicate delivery ignored"
    TRUNK_CREATED = "trunk_created", "Unknown trunk created"
    PUSHED = "pushed", "Pushed to operators"
    CLAIMED = "claimed", "Claimed for a decision"
    CLAIM_REJECTED = "claim_rejected", "Claim rejected"
    PBX_REQUEST = "pbx_request", "Request sent to the PBX"
    PBX_RESPONSE = "pbx_response", "PBX answered"
    ACCEPTED = "accepted", "Accepted"
    REFUSED = "refused", "Refused"
    EXPIRED = "expired", "Expired"
    GONE = "gone", "Gone"
    FAILED = "failed", "Failed"
    PBX_STATE = "pbx_state", "PBX call state"
    PBX_CDR = "pbx_cdr", "PBX call record"


class AuditQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise TypeError("The audit trail is append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("The audit trail is append-only")


class AuditEvent(models.Model):
    """Append-only record of everything that happened to a call."""

    call = models.ForeignKey(Call, on_delete=models.PROTECT, related_name="audit_events")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=16, choices=AuditKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    message = models.CharField(max_length=512, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ("at", "id")
        indexes: ClassVar[list[Any]] = [models.Index(fields=("call", "at"), name="audit_call_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.kind} {self.message}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise TypeError("The audit trail is append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("The audit trail is append-only")
