"""The audit log: filters, whitelisted sorts and keyset pagination over ``Call``.

Pages seek on ``(sort key, id)`` instead of using OFFSET, so page 5,000 costs what page 1 costs:
the database starts reading at the cursor in the index instead of counting its way there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import (
    DurationField,
    Expression,
    ExpressionWrapper,
    F,
    Q,
    QuerySet,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _

from screening.models import (
    MAX_PK,
    Call,
    CallStatus,
    DecidedBy,
    PbxOutcome,
    RefusalReason,
    Trunk,
)
from screening.reports.params import BoundedDateTimeField, check_date_range

PAGE_SIZE = 50
DATETIME_INPUT_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"]
# Sorting NULL decision times with a sentinel keeps the keyset comparison total (NULL < x is NULL).
NO_DECISION = timedelta(days=-1)
# A cursor is a short token; a decision time (and the sentinel) is far below a year.
MAX_CURSOR = 512
MAX_DURATION_US = 366 * 24 * 3600 * 10**6


# --- Filters --------------------------------------------------------------------------------


class OperatorChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return obj.get_full_name() or obj.get_username()


def operator_queryset() -> QuerySet[Any]:
    """Everyone who may decide calls (directly, through a group, or as superuser)."""
    codename = "decide_call"
    return (
        get_user_model()
        .objects.filter(
            Q(is_superuser=True)
            | Q(user_permissions__codename=codename)
            | Q(groups__permissions__codename=codename)
        )
        .distinct()
        .order_by("first_name", "last_name", "username")
    )


class AuditFilterForm(forms.Form):
    """The audit log's filters and order: the query parameters of the list and of its CSV export
    (screening.reports.params)."""

    received_from = BoundedDateTimeField(
        required=False,
        label=_("From"),
        input_formats=DATETIME_INPUT_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    received_until = BoundedDateTimeField(
        required=False,
        label=_("Until"),
        help_text=_("Not including this minute."),
        input_formats=DATETIME_INPUT_FORMATS,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    trunk = forms.ModelChoiceField(
        queryset=Trunk.objects.all(), required=False, empty_label=_("All trunks")
    )
    operator = OperatorChoiceField(
        queryset=get_user_model().objects.none(), required=False, empty_label=_("Any operator")
    )
    outcome = forms.ChoiceField(
        label=_("Outcome"), choices=[("", _("Any outcome")), *CallStatus.choices], required=False
    )
    decided_by = forms.ChoiceField(
        label=_("Decided by"),
        choices=[("", _("Anyone or anything")), *DecidedBy.choices],
        required=False,
    )
    caller = forms.CharField(label=_("Caller number"), max_length=64, required=False)
    caller_match = forms.ChoiceField(
        label=_("Match"),
        choices=[("prefix", _("starts with")), ("contains", _("contains"))],
        required=False,
        initial="prefix",
    )
    mismatch = forms.BooleanField(label=_("PBX mismatch only"), required=False)
    # Set by the column headers, not typed in: hidden, and the page shows its error on top.
    sort = forms.ChoiceField(
        choices=lambda: [(p, p) for key in SORTS for p in (key, f"-{key}")],
        required=False,
        widget=forms.HiddenInput,
        error_messages={"invalid_choice": _("Unknown order “%(value)s”: sorted newest first.")},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["operator"].queryset = operator_queryset()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("received_from"), data.get("received_until")
        if start and end and end <= start:
            self.add_error("received_until", _("Must be after “From”."))
        return data


class AuditPageForm(AuditFilterForm):
    """The list's parameters: the filters and order, and the page's cursor (from its Next and
    Previous links)."""

    after = forms.CharField(required=False, max_length=MAX_CURSOR, widget=forms.HiddenInput)
    before = forms.CharField(required=False, max_length=MAX_CURSOR, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        kind = Ordering.parse(data.get("sort")).sort.kind
        for name in ("after", "before"):
            if data.get(name) and Cursor.decode(data[name], kind) is None:
                self.add_error(name, _("This page link is not valid: showing the first page."))
        return data


def filter_calls(data: dict[str, Any], base: QuerySet[Call] | None = None) -> QuerySet[Call]:
    """Apply the cleaned filter values (fields that failed validation are simply absent)."""
    qs = Call.objects.all() if base is None else base
    if data.get("received_from"):
        qs = qs.filter(received_at__gte=data["received_from"])
    if data.get("received_until"):
        qs = qs.filter(received_at__lt=data["received_until"])
    if data.get("trunk"):
        qs = qs.filter(trunk=data["trunk"])
    if data.get("operator"):
        qs = qs.filter(decided_by=data["operator"])
    if data.get("outcome"):
        qs = qs.filter(status=data["outcome"])
    if data.get("decided_by"):
        qs = qs.filter(decided_by_kind=data["decided_by"])
    caller = (data.get("caller") or "").strip()
    if caller:
        if data.get("caller_match") == "contains":
            qs = qs.filter(caller__contains=caller)
        else:
            qs = qs.filter(caller__startswith=caller)
    if data.get("mismatch"):
        qs = qs.filter(outcome_mismatch=True)
    return qs


def cleaned_filters(form: AuditFilterForm) -> dict[str, Any]:
    """Valid values only: a bad field shows its error, the others still filter."""
    form.is_valid()
    return {k: v for k, v in form.cleaned_data.items() if k not in form.errors}


# --- Sorting and keyset pagination ----------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    key: str
    label: str
    kind: str  # how cursor values are encoded: datetime, str or duration

    def expression(self) -> Expression:
        if self.key == "decision":
            return Coalesce(
                ExpressionWrapper(F("claimed_at") - F("received_at"), output_field=DurationField()),
                Value(NO_DECISION),
                output_field=DurationField(),
            )
        return F(SORT_FIELDS[self.key])


SORT_FIELDS = {
    "received": "received_at",
    "caller": "caller",
    "called": "called",
    "outcome": "status",
}
SORTS = {
    s.key: s
    for s in (
        Sort("received", _("Received"), "datetime"),
        Sort("caller", _("Caller"), "str"),
        Sort("called", _("Called"), "str"),
        Sort("outcome", _("Outcome"), "str"),
        Sort("decision", _("Decision time"), "duration"),
    )
}
DEFAULT_SORT = "-received"


@dataclass(frozen=True)
class Ordering:
    sort: Sort
    descending: bool

    @classmethod
    def parse(cls, raw: str | None) -> Ordering:
        raw = raw or DEFAULT_SORT
        descending = raw.startswith("-")
        sort = SORTS.get(raw.lstrip("-"))
        if sort is None:
            return cls.parse(DEFAULT_SORT)
        return cls(sort, descending)

    @property
    def param(self) -> str:
        return ("-" if self.descending else "") + self.sort.key

    def toggled(self, key: str) -> str:
        """The sort parameter a column header links to."""
        if key == self.sort.key:
            return ("" if self.descending else "-") + key
        return "-" + key if SORTS[key].kind in {"datetime", "duration"} else key


@dataclass(frozen=True)
class Cursor:
    value: Any
    pk: int

    def encode(self, kind: str) -> str:
        if kind == "datetime":
            value: Any = self.value.isoformat()
        elif kind == "duration":
            value = int(self.value / timedelta(microseconds=1))
        else:
            value = self.value
        raw = json.dumps([value, self.pk], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str | None, kind: str) -> Cursor | None:
        """None for a missing or malformed token, or one whose values a query cannot take: a
        datetime out of range once in UTC, a duration beyond any decision time, a string with
        NUL or a lone surrogate, an id that is not a row id."""
        if not token or len(token) > MAX_CURSOR:
            return None
        try:
            value, pk = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
            if type(pk) is not int or not 0 < pk <= MAX_PK:
                return None
            if kind == "datetime":
                value = parse_datetime(value) if isinstance(value, str) else None
                if value is None or timezone.is_naive(value):
                    return None
                value = value.astimezone(UTC)  # a ±14:00 offset at either end overflows here
                check_date_range(value)
            elif kind == "duration":
                if type(value) is not int or abs(value) > MAX_DURATION_US:
                    return None
                value = timedelta(microseconds=value)
            elif not isinstance(value, str) or len(value) > MAX_CURSOR or "\x00" in value:
                return None
            else:
                value.encode()  # a lone surrogate cannot go to the database
        except (ValueError, TypeError, OverflowError, RecursionError, ValidationError):
            return None  # binascii.Error and UnicodeError are ValueErrors
        return cls(value, pk)


def ordered(qs: QuerySet[Call], ordering: Ordering) -> QuerySet[Call]:
    sign = "-" if ordering.descending else ""
    return qs.annotate(sort_key=ordering.sort.expression()).order_by(f"{sign}sort_key", f"{sign}pk")


def seek(
    qs: QuerySet[Call], ordering: Ordering, cursor: Cursor, *, forward: bool = True
) -> QuerySet[Call]:
    """Rows strictly after (or before) ``cursor`` in ``ordering``; ``qs`` must come from
    ``ordered``. The redundant ``>=``/``<=`` bound lets the database start at the cursor in an
    index on the sort column; the OR then skips the cursor row's ties."""
    smaller = ordering.descending == forward
    op, op_eq = ("lt", "lte") if smaller else ("gt", "gte")
    v = cursor.value
    return qs.filter(
        Q(**{f"sort_key__{op_eq}": v}),
        Q(**{f"sort_key__{op}": v}) | Q(sort_key=v, **{f"pk__{op}": cursor.pk}),
    )


def reversed_ordering(ordering: Ordering) -> Ordering:
    return Ordering(ordering.sort, not ordering.descending)


@dataclass
class Page:
    rows: list[AuditRow]
    next_cursor: str | None
    prev_cursor: str | None


def fetch_page(
    qs: QuerySet[Call],
    ordering: Ordering,
    *,
    after: str | None = None,
    before: str | None = None,
    size: int = PAGE_SIZE,
) -> Page:
    """One page of rows, with the cursors for the next and previous pages (None at either end)."""
    kind = ordering.sort.kind
    before_cursor = Cursor.decode(before, kind)
    after_cursor = None if before_cursor else Cursor.decode(after, kind)
    if before_cursor is not None:
        # Walk backwards from the cursor, then show the rows in the page's own order.
        back = reversed_ordering(ordering)
        rows = list(query_rows(seek(ordered(qs, back), back, before_cursor), size + 1))
        has_prev, has_next = len(rows) > size, True
        rows = rows[:size][::-1]
    else:
        page_qs = ordered(qs, ordering)
        if after_cursor is not None:
            page_qs = seek(page_qs, ordering, after_cursor)
        rows = list(query_rows(page_qs, size + 1))
        has_prev, has_next = after_cursor is not None, len(rows) > size
        rows = rows[:size]
    if not rows:
        return Page([], None, None)
    return Page(
        rows,
        rows[-1].cursor.encode(kind) if has_next else None,
        rows[0].cursor.encode(kind) if has_prev else None,
    )


# --- Rows -----------------------------------------------------------------------------------

ROW_FIELDS = (
    "pk",
    "sort_key",
    "received_at",
    "deadline",
    "claimed_at",
    "caller",
    "called",
    "trunk__name",
    "trunk__label",
    "status",
    "decided_by_kind",
    "decided_by__username",
    "decided_by__first_name",
    "decided_by__last_name",
    "rule_id",
    "rule__pattern",
    "pbx_errcode",
    "pbx_errmsg",
    "pbx_outcome",
    "outcome_mismatch",
    "caller_name",
    "reason",
    "reason_note",
)

_STATUS_LABELS = dict(CallStatus.choices)
_OUTCOME_LABELS = dict(PbxOutcome.choices)
_REASON_LABELS = dict(RefusalReason.choices)
SHORT_STATUS = {
    CallStatus.PENDING: _("Pending"),
    CallStatus.DECIDING: _("Deciding"),
    CallStatus.ACCEPTED: _("Accepted"),
    CallStatus.REFUSED: _("Refused"),
    CallStatus.EXPIRED: _("Expired"),
    CallStatus.GONE: _("Gone"),
    CallStatus.FAILED: _("Failed"),
    CallStatus.UNSCREENED: _("Unscreened"),
}


@dataclass(slots=True)
class AuditRow:
    """One call as the list and the CSV show it; built from a ``values_list`` tuple, because
    model instances cost several times more per row in a million-row export."""

    pk: int
    sort_key: Any
    received_at: datetime
    deadline: datetime
    claimed_at: datetime | None
    caller: str
    called: str
    trunk_name: str
    trunk_label: str
    status: str
    decided_by_kind: str
    username: str | None
    first_name: str | None
    last_name: str | None
    rule_id: int | None
    rule_pattern: str | None
    pbx_errcode: int | None
    pbx_errmsg: str
    pbx_outcome: str
    outcome_mismatch: bool
    caller_name: str
    reason: str
    reason_note: str

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.sort_key, self.pk)

    @property
    def trunk(self) -> str:
        return self.trunk_label or self.trunk_name

    @property
    def status_label(self) -> str:
        label = SHORT_STATUS.get(self.status, self.status)
        return str(label) if label else label

    @property
    def operator(self) -> str:
        if not self.username:
            return ""
        return f"{self.first_name or ''} {self.last_name or ''}".strip() or self.username

    @property
    def decided_by(self) -> str:
        """Who or what decided, in words."""
        return describe_decider(
            self.decided_by_kind, self.operator, self.rule_id, self.rule_pattern
        )

    @property
    def decision_ms(self) -> int | None:
        if self.claimed_at is None:
            return None
        return round((self.claimed_at - self.received_at) / timedelta(milliseconds=1))

    @property
    def window_ms(self) -> int:
        return round((self.deadline - self.received_at) / timedelta(milliseconds=1))

    @property
    def decision_share(self) -> int | None:
        """Decision time as a percentage of the window."""
        ms = self.decision_ms
        return None if ms is None or not self.window_ms else round(100 * ms / self.window_ms)

    @property
    def pbx_result(self) -> str:
        if self.pbx_errcode is None and not self.pbx_errmsg:
            return ""
        code = "" if self.pbx_errcode is None else str(self.pbx_errcode)
        return f"{code} {self.pbx_errmsg}".strip()

    @property
    def pbx_outcome_label(self) -> str:
        label = _OUTCOME_LABELS.get(self.pbx_outcome, self.pbx_outcome)
        return str(label) if label else label

    @property
    def reason_label(self) -> str:
        label = _REASON_LABELS.get(self.reason, self.reason)
        return str(label) if label else label


def describe_decider(
    kind: str, operator: str, rule_id: int | None, rule_pattern: str | None
) -> str:
    if kind == DecidedBy.OPERATOR:
        return operator or str(_("Operator"))
    if kind == DecidedBy.RULE:
        if not rule_id:
            return str(_("Rule (since deleted)"))
        return str(_("Rule #%(id)s (%(pattern)s)")) % {"id": rule_id, "pattern": rule_pattern}
    words = {
        DecidedBy.TRUNK_POLICY: _("Trunk policy (screening off)"),
        DecidedBy.FALLBACK: _("Fallback: no operator online"),
        DecidedBy.PBX_TIMEOUT: _("PBX timeout"),
        DecidedBy.CALLER: _("Caller hung up"),
    }
    return str(words.get(kind, ""))


def query_rows(qs: QuerySet[Call], limit: int | None = None) -> Iterator[AuditRow]:
    values = qs.values_list(*ROW_FIELDS)
    if limit is not None:
        values = values[:limit]
    for row in values:
        yield AuditRow(*row)


def iter_rows(qs: QuerySet[Call], ordering: Ordering, chunk_size: int = 2000) -> Iterator[AuditRow]:
    """Every row of the filter in the list's order, streamed from the database in chunks."""
    values = ordered(qs, ordering).values_list(*ROW_FIELDS)
    for row in values.iterator(chunk_size=chunk_size):
        yield AuditRow(*row)
