"""Trunks, calls (one row per 30016) and the append-only audit trail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from screening.calls.numbers import normalise_pattern
from screening.pbx import events as wire

MAX_PK = 2**63 - 1  # the largest BigAutoField key


class FallbackPolicy(models.TextChoices):
    WINDOW = "window", _("Leave it to the PBX window")
    ACCEPT = "accept", _("Accept at once")
    REFUSE = "refuse", _("Refuse at once")


class Trunk(models.Model):
    """A PBX trunk, matched by the name the PBX puts in ``trunk_name``."""

    # Column widths of what the PBX sends come from the parser's limits (screening.pbx.events),
    # so every value it lets through fits.
    name = models.CharField(
        verbose_name=_("name"),
        max_length=wire.TRUNK_NAME_CHARS,
        unique=True,
        help_text=_("Trunk name exactly as on the PBX"),
    )
    label = models.CharField(
        verbose_name=_("label"),
        max_length=wire.TRUNK_NAME_CHARS,
        blank=True,
        help_text=_("What operators see"),
    )
    screening_enabled = models.BooleanField(
        verbose_name=_("screening enabled"),
        default=True,
        help_text=_("Off: calls on this trunk are accepted at once, without an operator."),
    )
    operator_group = models.ForeignKey(
        Group,
        verbose_name=_("operator group"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("Only members of this group see and decide its calls (blank: all operators)."),
    )
    fallback_policy = models.CharField(
        verbose_name=_("fallback policy"),
        max_length=8,
        choices=FallbackPolicy.choices,
        default=FallbackPolicy.WINDOW,
        help_text=_(
            "What happens to a call when no operator who may decide it (of the operator group, "
            "or any operator without a group) is online."
        ),
    )
    country_code = models.CharField(
        verbose_name=_("country code"),
        max_length=4,
        default="44",
        help_text=_("Used to read national numbers (020… → 4420…) when matching screening rules."),
    )
    national_prefix = models.CharField(
        verbose_name=_("national prefix"),
        max_length=4,
        blank=True,
        default="0",
        help_text=_("Trunk prefix of national numbers"),
    )
    international_prefix = models.CharField(
        verbose_name=_("international prefix"),
        max_length=4,
        blank=True,
        default="00",
        help_text=_("Prefix of international numbers"),
    )
    auto_created = models.BooleanField(
        verbose_name=_("auto created"),
        default=False,
        editable=False,
        help_text=_("Created because a call arrived on an unknown trunk"),
    )
    created_at = models.DateTimeField(
        verbose_name=_("created at"), default=timezone.now, editable=False
    )
    # What the PBX's Trunk Status Monitor holds for this trunk, as last read (trunk sync, the admin
    # action, the sweeper): None = not read yet, or the PBX does not list the trunk.
    pbx_control_inbound = models.BooleanField(
        verbose_name=_("pbx control inbound"),
        null=True,
        editable=False,
        help_text=_("Control Inbound Call on at the PBX"),
    )
    pbx_call_status = models.BooleanField(
        verbose_name=_("pbx call status"),
        null=True,
        editable=False,
        help_text=_("Call Status on at the PBX"),
    )
    pbx_monitor_checked_at = models.DateTimeField(
        verbose_name=_("pbx monitor checked at"), null=True, blank=True, editable=False
    )

    class Meta:
        verbose_name = _("trunk")
        verbose_name_plural = _("trunks")
        ordering = ("name",)

    def __str__(self) -> str:
        return self.display_name

    def save(self, *args: Any, **kwargs: Any) -> None:
        super().save(*args, **kwargs)
        # This trunk's rules read national numbers with its numbering: keep them in step.
        for rule in self.rules.all():
            rule.save(update_fields=["normalised"])

    @property
    def display_name(self) -> str:
        return self.label or self.name


class CallStatus(models.TextChoices):
    PENDING = "pending", _("Waiting for an operator")
    DECIDING = "deciding", _("Decision being sent to the PBX")
    ACCEPTED = "accepted", _("Accepted")
    REFUSED = "refused", _("Refused")
    EXPIRED = "expired", _("Expired: the PBX routed the call itself")
    GONE = "gone", _("Gone: caller hung up or channel not found")
    FAILED = "failed", _("Failed: the PBX did not carry out the decision")
    UNSCREENED = "unscreened", _("Unscreened: offered while the event link was down")


OPEN_STATUSES = (CallStatus.PENDING, CallStatus.DECIDING)


class Decision(models.TextChoices):
    ACCEPT = "accept", _("Accept")
    REFUSE = "refuse", _("Refuse")


class DecidedBy(models.TextChoices):
    OPERATOR = "operator", _("Operator")
    TRUNK_POLICY = "trunk_policy", _("Trunk policy")
    RULE = "rule", _("Screening rule")
    FALLBACK = "fallback", _("No operator online")
    PBX_TIMEOUT = "pbx_timeout", _("PBX (window passed)")
    CALLER = "caller", _("Caller hung up")


class RuleMatch(models.TextChoices):
    EXACT = "exact", _("Exact number")
    PREFIX = "prefix", _("Number starts with")


RULE_PRECEDENCE_HELP = _(
    "Numbers are compared in international form: +44 20…, 0044 20… and 020… (read with the "
    "trunk's country code) are all 4420…. When several rules match, the most specific wins: an "
    "exact rule beats a prefix rule, a longer prefix beats a shorter one, a rule for the call's "
    "trunk beats a rule for all trunks, and on a tie refuse wins. Expired or disabled rules are "
    "ignored; withheld numbers never match."
)


class RefusalReason(models.TextChoices):
    """Why an operator refused a call; the keys 1 to 4 after R pick them in this order."""

    SPAM = "spam", _("Spam or sales")
    WRONG_NUMBER = "wrong_number", _("Wrong number")
    ABUSIVE = "abusive", _("Abusive")
    OTHER = "other", _("Other")


class Rule(models.Model):
    """A screening rule: decides matching calls at once, before any operator sees them."""

    pattern = models.CharField(
        verbose_name=_("pattern"),
        max_length=64,
        help_text=format_lazy(
            "{} {}",
            _(
                "The caller's number or the start of it, as you like to type it "
                "(+44 20 7946 0123, 0044 20…, 020…)."
            ),
            RULE_PRECEDENCE_HELP,
        ),
    )
    # Filled on save from ``pattern`` (screening.calls.numbers.normalise); lookups use only this.
    normalised = models.CharField(verbose_name=_("normalised"), max_length=64, editable=False)
    match = models.CharField(
        verbose_name=_("match"), max_length=8, choices=RuleMatch.choices, default=RuleMatch.EXACT
    )
    trunk = models.ForeignKey(
        Trunk,
        verbose_name=_("trunk"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="rules",
        help_text=_(
            "Blank: all trunks. National numbers in the pattern are read with this "
            "trunk's country code (44 for all trunks)."
        ),
    )
    action = models.CharField(verbose_name=_("action"), max_length=8, choices=Decision.choices)
    expires_at = models.DateTimeField(
        verbose_name=_("expires at"),
        null=True,
        blank=True,
        help_text=_("Blank: never. An expired rule is ignored."),
    )
    enabled = models.BooleanField(verbose_name=_("enabled"), default=True)
    note = models.CharField(verbose_name=_("note"), max_length=256, blank=True)
    hit_count = models.PositiveIntegerField(verbose_name=_("hit count"), default=0, editable=False)
    last_hit_at = models.DateTimeField(
        verbose_name=_("last hit at"), null=True, blank=True, editable=False
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(
        verbose_name=_("created at"), default=timezone.now, editable=False
    )
    # Set when an operator made the rule from a call's card ("Refuse and block", "Accept and
    # always allow"), so admin, the audit and the review queue can show where it came from.
    source_call = models.ForeignKey(
        "Call",
        verbose_name=_("source call"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
        help_text=_("The call whose card this rule was made from"),
    )
    reason = models.CharField(
        verbose_name=_("reason"), max_length=16, choices=RefusalReason.choices, blank=True
    )
    # When a permanent block was last written to the PBX's own block list (admin action).
    pbx_blocked_at = models.DateTimeField(
        verbose_name=_("pbx blocked at"), null=True, blank=True, editable=False
    )

    class Meta:
        verbose_name = _("rule")
        verbose_name_plural = _("rules")
        ordering = ("normalised", "match", "id")
        indexes: ClassVar[list[Any]] = [
            # A call looks up its number and all its prefixes in one IN query.
            models.Index(fields=("normalised", "enabled"), name="rule_lookup"),
        ]

    def __str__(self) -> str:
        return self.describe()

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.normalised = normalise_pattern(self.pattern, self.trunk)
        super().save(*args, **kwargs)

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if not normalise_pattern(self.pattern, self.trunk if self.trunk_id else None):
            raise ValidationError({"pattern": _("Type at least one digit after any prefix.")})

    def describe(self) -> str:
        """How the audit names the rule (kept in the audit row even after the rule is deleted)."""
        what = "=" if self.match == RuleMatch.EXACT else "starts with"
        where = f" on {self.trunk.name}" if self.trunk_id and self.trunk else ""
        note = f" ({self.note})" if self.note else ""
        action = self.get_action_display().lower()
        return f"rule #{self.pk}: {action} caller {what} {self.pattern}{where}{note}"


class PbxOutcome(models.TextChoices):
    ROUTED = "routed", _("Routed to an extension")
    ANSWERED = "answered", _("Answered")
    DROPPED = "dropped", _("Dropped by the PBX")
    CALLER_HUNG_UP = "caller_hung_up", _("Caller hung up")
    NO_ANSWER = "no_answer", _("Not answered")


class Call(models.Model):
    """One inbound call offered by the PBX through event 30016."""

    # Widths from the parser's limits (screening.pbx.events): a longer value arrives shortened,
    # with the original in the call's "received" audit row.
    pbx_call_id = models.CharField(max_length=wire.CALL_ID_CHARS)
    channel_id = models.CharField(max_length=wire.CHANNEL_ID_CHARS)
    pbx_sn = models.CharField(max_length=wire.SN_CHARS, blank=True)
    caller = models.CharField(max_length=wire.NUMBER_CHARS, blank=True, db_index=True)
    called = models.CharField(max_length=wire.NUMBER_CHARS, blank=True)
    trunk = models.ForeignKey(Trunk, on_delete=models.PROTECT, related_name="calls")

    received_at = models.DateTimeField(db_index=True)
    deadline = models.DateTimeField(
        help_text=_("When the PBX stops waiting and routes the call itself")
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
    # The rule that decided the call; the audit row also names it, so deleting it loses nothing.
    rule = models.ForeignKey(
        Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="calls"
    )
    # What the PBX reported it did (30011/30012), and whether that contradicts our record.
    pbx_outcome = models.CharField(max_length=16, choices=PbxOutcome.choices, blank=True)
    pbx_outcome_at = models.DateTimeField(null=True, blank=True)
    outcome_mismatch = models.BooleanField(default=False, db_index=True)
    # The caller's history as it stood when the call arrived, so pushes and snapshots need no
    # per-call queries.
    history = models.JSONField(default=dict, blank=True)
    # The caller's number in the rules' form (screening.calls.numbers), for notes, contacts and
    # precedent, which are kept per number whatever format the PBX sent it in.
    caller_key = models.CharField(max_length=wire.NUMBER_CHARS, blank=True)
    # Who is calling, as known when the call arrived or found by a lookup within its budget.
    caller_name = models.CharField(max_length=200, blank=True)
    # The caller's keyed pseudonym (screening.calls.pseudonyms), fixed when the call is stored: the
    # audit chain hashes the number in this form, and retention and erasure replace the number by
    # it, so the chain still verifies after them.
    caller_token = models.CharField(max_length=wire.NUMBER_CHARS, blank=True)
    # What the card shows beside the number, as it stood when the call arrived (contact, notes,
    # precedent, suggestion: screening.calls.context), so pushes and snapshots need no queries.
    context = models.JSONField(default=dict, blank=True)
    # A refusal's reason, recorded after the decision and editable by its operator for a while.
    reason = models.CharField(max_length=16, choices=RefusalReason.choices, blank=True)
    reason_note = models.CharField(max_length=500, blank=True)
    reason_at = models.DateTimeField(null=True, blank=True)
    # What the shadow suggestion would have decided (blank: no suggestion), to measure agreement.
    suggestion = models.CharField(max_length=8, choices=Decision.choices, blank=True)

    class Meta:
        verbose_name = _("call")
        verbose_name_plural = _("calls")
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
            models.Index(fields=("caller_key", "-received_at"), name="call_caller_key_recent"),
        ]
        permissions = (
            ("decide_call", _("Can accept or refuse live calls")),
            ("view_audit", _("Can review the audit log and statistics")),
        )

    def __str__(self) -> str:
        return f"{self.caller or 'withheld'} → {self.called} ({self.pbx_call_id})"

    def last_useful_moment(self) -> Any:
        """The last moment a decision can still be sent: the deadline minus the safety margin."""
        return self.deadline - timedelta(seconds=settings.SCREEN_SAFETY_MARGIN_SECONDS)


class AuditKind(models.TextChoices):
    RECEIVED = "received", _("Received from the PBX")
    DUPLICATE = "duplicate", _("Duplicate delivery ignored")
    TRUNK_CREATED = "trunk_created", _("Unknown trunk created")
    PUSHED = "pushed", _("Pushed to operators")
    CLAIMED = "claimed", _("Claimed for a decision")
    PBX_REQUEST = "pbx_request", _("Request sent to the PBX")
    PBX_RESPONSE = "pbx_response", _("PBX answered")
    ACCEPTED = "accepted", _("Accepted")
    REFUSED = "refused", _("Refused")
    EXPIRED = "expired", _("Expired")
    GONE = "gone", _("Gone")
    FAILED = "failed", _("Failed")
    PBX_STATE = "pbx_state", _("PBX call state")
    PBX_CDR = "pbx_cdr", _("PBX call record")
    MISMATCH = "mismatch", _("PBX outcome contradicts our record")
    CALLER_NAME = "caller_name", _("Caller identified")
    REASON = "reason", _("Refusal reason")
    NOTE = "note", _("Note added")
    RULE_CREATED = "rule_created", _("Rule created from the card")
    UNSCREENED = "unscreened", _("Offered while the event link was down")
    RETENTION = "retention", _("Old numbers pseudonymised")
    ERASED = "erased", _("A number was erased")


class AuditQuerySet(models.QuerySet["AuditEvent"]):
    def update(self, **kwargs: Any) -> int:
        raise TypeError("The audit trail is append-only")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("The audit trail is append-only")


class AuditEvent(models.Model):
    """Append-only record of everything that happened to a call.

    The methods below refuse early; the database refuses too (triggers, migration 0006), whatever
    path a change takes. The one sanctioned rewrite is screening.calls.audit_rewrite.
    """

    # Blank for the rows about the record itself (retention runs, erasures), which name no call.
    call = models.ForeignKey(
        Call, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=16, choices=AuditKind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    message = models.CharField(max_length=512, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    # The tamper-evident chain (screening.calls.chain): the row's place in it, contiguous from 1,
    # and the hash over its content and the previous row's hash. Blank for rows older than it.
    chain_seq = models.BigIntegerField(null=True, blank=True, unique=True)
    chain_hash = models.CharField(max_length=64, blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
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


class Presence(models.Model):
    """One connected operator socket; shared across processes through the database.

    Online means ``last_seen`` within ``screening.calls.presence.PRESENCE_TTL``: a killed process
    leaves rows that simply stop counting.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="presences"
    )
    channel_name = models.CharField(max_length=256, unique=True)
    process = models.CharField(max_length=128, help_text=_("hostname:pid"))
    # The dashboard is on screen (Page Visibility API): a hidden tab is connected, not online.
    visible = models.BooleanField(default=True)
    connected_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.user_id} on {self.process}"


class StatsHour(models.Model):
    """One hour (UTC) the statistics roll-up has looked at (screening.reports.rollup).

    ``complete``: every call received in the hour had finished when it was rolled up, so its
    ``StatsRollup`` rows are final and the statistics read them instead of the calls. An hour that
    still held an open call is recorded incomplete (no rows) and looked at again on the next run.
    Empty hours are recorded too, so the statistics know there is nothing to count live.
    """

    hour = models.DateTimeField(unique=True)
    complete = models.BooleanField(default=False)
    calls = models.PositiveIntegerField(default=0)
    rolled_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("hour",)

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} UTC ({'complete' if self.complete else 'open'})"


class StatsRollup(models.Model):
    """The statistics' counts for one closed hour (UTC), trunk and deciding user.

    The count columns are exactly the conditional counts ``screening.reports.stats`` takes from
    the call table; ``decision_ms`` lists the operator decision times (received → claimed) of
    these calls, rounded to the millisecond and sorted (a 1-ms histogram in its sparse form).
    """

    hour = models.DateTimeField(db_index=True)
    trunk = models.ForeignKey(Trunk, on_delete=models.CASCADE, related_name="+")
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    offered = models.PositiveIntegerField(default=0)
    accepted = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)
    expired = models.PositiveIntegerField(default=0)
    gone = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    auto = models.PositiveIntegerField(default=0)
    op_n = models.PositiveIntegerField(default=0)
    op_accepted = models.PositiveIntegerField(default=0)
    op_refused = models.PositiveIntegerField(default=0)
    op_failed = models.PositiveIntegerField(default=0)
    op_close = models.PositiveIntegerField(default=0)
    decision_ms = models.JSONField(default=list, blank=True)

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} UTC trunk {self.trunk_id} user {self.decided_by_id}"


class ContactSource(models.TextChoices):
    MANUAL = "manual", _("Entered by hand")
    IMPORT = "import", _("Imported from a file")
    PBX = "pbx", _("PBX company contacts")
    LOOKUP = "lookup", _("External lookup")


class Contact(models.Model):
    """Someone who may call: the card shows their name and organisation beside the number."""

    name = models.CharField(verbose_name=_("name"), max_length=200, db_index=True)
    organisation = models.CharField(verbose_name=_("organisation"), max_length=200, blank=True)
    note = models.TextField(verbose_name=_("note"), blank=True)
    source = models.CharField(
        verbose_name=_("source"),
        max_length=8,
        choices=ContactSource.choices,
        default=ContactSource.MANUAL,
    )
    # The source's own id: the PBX contact's id, a vCard UID or an import key. Sync and re-import
    # find their rows by it, and never touch rows of another source.
    external_id = models.CharField(verbose_name=_("external id"), max_length=200, blank=True)
    created_at = models.DateTimeField(
        verbose_name=_("created at"), default=timezone.now, editable=False
    )
    updated_at = models.DateTimeField(
        verbose_name=_("updated at"), default=timezone.now, editable=False
    )

    class Meta:
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        ordering = ("name", "id")
        indexes: ClassVar[list[Any]] = [
            models.Index(fields=("source", "external_id"), name="contact_source_id"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.organisation})" if self.organisation else self.name


class ContactNumber(models.Model):
    contact = models.ForeignKey(
        Contact, verbose_name=_("contact"), on_delete=models.CASCADE, related_name="numbers"
    )
    number = models.CharField(
        verbose_name=_("number"),
        max_length=wire.NUMBER_CHARS,
        help_text=_("As entered or imported"),
    )
    # The rules' form (screening.calls.numbers.normalise): what calls are matched on.
    normalised = models.CharField(
        verbose_name=_("normalised"), max_length=wire.NUMBER_CHARS, db_index=True, editable=False
    )
    label = models.CharField(
        verbose_name=_("label"), max_length=32, blank=True, help_text=_("mobile, business, home…")
    )

    class Meta:
        verbose_name = _("contact number")
        verbose_name_plural = _("contact numbers")
        ordering = ("id",)

    def __str__(self) -> str:
        return self.number

    def save(self, *args: Any, **kwargs: Any) -> None:
        from screening.calls.numbers import normalise

        self.normalised = normalise(self.number)
        super().save(*args, **kwargs)


class CallerNote(models.Model):
    """What the team knows about a number, shown newest first on every later card of it."""

    number = models.CharField(
        verbose_name=_("number"), max_length=wire.NUMBER_CHARS, db_index=True
    )  # normalised
    text = models.CharField(verbose_name=_("text"), max_length=500)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("author"),
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(verbose_name=_("created at"), default=timezone.now)
    expires_at = models.DateTimeField(
        verbose_name=_("expires at"), null=True, blank=True, help_text=_("Blank: never")
    )
    call = models.ForeignKey(
        Call,
        verbose_name=_("call"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="notes",
    )

    class Meta:
        verbose_name = _("caller note")
        verbose_name_plural = _("caller notes")
        ordering = ("-created_at", "-id")
        indexes: ClassVar[list[Any]] = [
            models.Index(fields=("number", "-created_at"), name="note_number_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.number}: {self.text[:40]}"


class ReviewKind(models.TextChoices):
    BLOCK = "block", _("Block suggestion")
    WRONG_REFUSAL = "wrong_refusal", _("Possible wrong refusal")
    RULE = "rule", _("Rule to review")


class ReviewAction(models.Model):
    """A supervisor's approval or dismissal in the review queue; never changed afterwards."""

    kind = models.CharField(max_length=16, choices=ReviewKind.choices)
    subject = models.CharField(max_length=200, help_text=_("A normalised number, or a rule's id"))
    approved = models.BooleanField()
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now, db_index=True)
    # Dismissed items are not suggested again until then.
    hidden_until = models.DateTimeField(null=True, blank=True)
    rule = models.ForeignKey(
        Rule, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        verbose_name = _("review action")
        verbose_name_plural = _("review actions")
        ordering = ("-at", "-id")
        indexes: ClassVar[list[Any]] = [
            models.Index(fields=("kind", "subject", "-at"), name="review_subject_recent"),
        ]

    def __str__(self) -> str:
        verb = "approved" if self.approved else "dismissed"
        return f"{self.get_kind_display()} {self.subject} {verb}"


class CallerPrecedent(models.Model):
    """What the team did with one number before, kept up to date as calls end, so a card reads it
    with one indexed lookup however many calls there are (screening.calls.precedent).

    ``*_weight`` are decayed sums (each decision counts 1 when made and halves every half-life),
    as they stood at ``as_of``; the ``*_count`` columns are plain counts. People's decisions and
    automatic ones (rules, fallback) are kept apart.
    """

    number = models.CharField(max_length=wire.NUMBER_CHARS, unique=True)  # normalised
    as_of = models.DateTimeField(default=timezone.now)
    people_accept_weight = models.FloatField(default=0.0)
    people_refuse_weight = models.FloatField(default=0.0)
    auto_accept_weight = models.FloatField(default=0.0)
    auto_refuse_weight = models.FloatField(default=0.0)
    people_accepted = models.PositiveIntegerField(default=0)
    people_refused = models.PositiveIntegerField(default=0)
    auto_accepted = models.PositiveIntegerField(default=0)
    auto_refused = models.PositiveIntegerField(default=0)
    # {user id: [accepted, refused]}: how many people decided, and who refused.
    operators = models.JSONField(default=dict, blank=True)
    # The latest decision by a person: {decision, reason, by, at, call}.
    last = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.number}: {self.people_refused}/{self.people_accepted + self.people_refused}"


class AuditChainHead(models.Model):
    """The newest link of the audit chain: one row (pk 1). Every transaction that writes audit
    rows takes it first (a row lock on PostgreSQL, the write lock on SQLite), so rows join the
    chain one transaction at a time, in order (screening.calls.chain)."""

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"audit chain at row {self.seq}"


class LinkOutage(models.Model):
    """A time the event link was down (or the listener was not running): the PBX routed the calls
    it offered then with nobody asked. After the link is back, the PBX's CDRs for the window are
    read and every inbound call on a screened trunk the product never saw is recorded as an
    unscreened call (screening.calls.reconcile)."""

    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    # Inbound calls on screened trunks the PBX's CDRs list for the window, and how many of them
    # were recorded as unscreened (the rest had reached us).
    offered = models.PositiveIntegerField(default=0)
    unscreened = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=512, blank=True)

    class Meta:
        ordering = ("-started_at",)

    def __str__(self) -> str:
        return f"link down {self.started_at:%Y-%m-%d %H:%M:%S} → {self.ended_at or 'now'}"


class ApiToken(models.Model):
    """A personal key for the REST API (``Authorization: Token <key>``). The key is shown once,
    when it is made; only its SHA-256 is kept, so a leaked database does not leak keys. A token
    acts with exactly its user's roles; revoking it (or deactivating the user) ends it at once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, help_text=_("What the token is for, e.g. 'CRM sync'"))
    # The key's first characters, kept in clear so an admin can tell which key a script holds.
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=("user", "name"),
                condition=models.Q(revoked_at__isnull=True),
                name="api_token_live_name_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class WebhookEndpoint(models.Model):
    """A receiver of signed outgoing events (screening.webhooks)."""

    url = models.URLField(max_length=500)
    secret = models.CharField(
        max_length=200, help_text=_("Shared secret for the X-Pbxscreen-Signature HMAC")
    )
    # Event type names (screening.webhooks.EVENT_TYPES); empty means every type.
    events = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("pk",)

    def __str__(self) -> str:
        return self.url


class DeliveryState(models.TextChoices):
    PENDING = "pending", _("Pending")
    DELIVERED = "delivered", _("Delivered")
    DEAD = "dead", _("Dead (gave up)")


class WebhookDelivery(models.Model):
    """The outbox: one event for one endpoint, written in the transaction of the state change it
    reports, so it exists if and only if that change committed. ``body`` is the exact JSON sent
    and signed; ``event_id`` is the same in every endpoint's copy of one event."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.UUIDField()
    type = models.CharField(max_length=40)
    body = models.TextField()
    # Events of one call are delivered in order (per endpoint); None for events about no call.
    call = models.ForeignKey(
        Call, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(
        max_length=10, choices=DeliveryState.choices, default=DeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A process that took the row for sending holds it until then (a crashed one lets go).
    locked_until = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_status = models.IntegerField(null=True, blank=True)
    last_latency_ms = models.IntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ("-pk",)
        constraints = [
            models.UniqueConstraint(
                fields=("endpoint", "event_id"), name="webhook_delivery_event_once"
            )
        ]
        indexes = [
            models.Index(fields=("state", "next_attempt_at"), name="webhook_due"),
            models.Index(fields=("endpoint", "call", "state"), name="webhook_call_order"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id} → {self.endpoint}"


class WebhookAttempt(models.Model):
    """One try at delivering a ``WebhookDelivery``: what the receiver answered, and how fast."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    at = models.DateTimeField(default=timezone.now)
    status_code = models.IntegerField(null=True, blank=True)
    latency_ms = models.IntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ("-at",)

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.status_code or self.error}"


class UserPreference(models.Model):
    """A person's own display settings; blank fields follow the browser (language) and the
    server's ``TIME_ZONE``."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="preference"
    )
    language = models.CharField(max_length=10, blank=True)
    time_zone = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"{self.user}: {self.language or 'browser'} / {self.time_zone or 'server'}"
