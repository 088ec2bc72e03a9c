from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from screening.api import tokens
from screening.calls import erasure, pseudonyms
from screening.calls.numbers import normalise
from screening.models import (
    ApiToken,
    AuditEvent,
    Call,
    CallerNote,
    CallStatus,
    Contact,
    ContactNumber,
    ReviewAction,
    Rule,
    Trunk,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from screening.pbx.blocklist import LIST_NAME, push_permanent_blocks
from screening.pbx.client import PbxClient
from screening.pbx.trunks import (
    PBX_PROBLEMS,
    MonitorResult,
    check_monitors,
    enable_control_inbound,
    sync_trunks,
)
from screening.reports.params import EARLIEST, LATEST
from screening.webhooks import endpoints as webhook_endpoints
from screening.webhooks.events import EVENT_TYPES


def _today() -> tuple[datetime, datetime]:
    start = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    return start, start + timedelta(days=1)


class CheckedChangeList(ChangeList):
    """The admin's list pages with their query parameters checked first. Django passes them on
    as they come: PostgreSQL rejects a NUL in a search or filter value, and the date hierarchy
    computes the end of the year, month or day asked for, which overflows at 9999, from numbers
    that may not fit a C long (a server error each time). Such a request, and a year outside the
    reports' date range, is an invalid lookup instead, answered as the admin answers any (its
    "?e=1" page)."""

    def get_filters(self, request: HttpRequest) -> Any:
        for key, values in request.GET.lists():
            if any("\x00" in value for value in (key, *values)):
                raise IncorrectLookupParameters(f"{key[:40]!r}: NUL character")
        if self.date_hierarchy:
            year = request.GET.get(f"{self.date_hierarchy}__year")
            if year is not None:
                try:
                    ok = EARLIEST.year <= int(year) <= LATEST.year
                except ValueError:
                    ok = False
                if not ok:
                    raise IncorrectLookupParameters(f"year {year[:20]!r} is out of range")
        try:
            return super().get_filters(request)
        except OverflowError as exc:  # a month or day beyond a C long
            raise IncorrectLookupParameters(exc) from exc


class CheckedAdmin(admin.ModelAdmin):
    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CheckedChangeList


# Django's own user and group pages get the same checks.
class CheckedUserAdmin(CheckedAdmin, UserAdmin):
    pass


class CheckedGroupAdmin(CheckedAdmin, GroupAdmin):
    pass


admin.site.unregister(User)
admin.site.register(User, CheckedUserAdmin)
admin.site.unregister(Group)
admin.site.register(Group, CheckedGroupAdmin)


@admin.register(Trunk)
class TrunkAdmin(CheckedAdmin):
    list_display = (
        "name",
        "label",
        "screening_enabled",
        "fallback_policy",
        "operator_group",
        "offered_today",
        "accepted_today",
        "refused_today",
        "expired_today",
        "auto_created",
        "control_inbound_at_pbx",
        "call_status_at_pbx",
    )
    list_editable = ("label", "screening_enabled", "fallback_policy")
    list_filter = ("screening_enabled", "fallback_policy", "auto_created")
    list_select_related = ("operator_group",)
    search_fields = ("name", "label")
    actions = ("sync_from_pbx", "check_at_pbx", "turn_on_control_inbound")
    fieldsets = (
        (None, {"fields": ("name", "label", "screening_enabled", "operator_group")}),
        (_("When no operator is online"), {"fields": ("fallback_policy",)}),
        (
            _("Numbering (for screening rules)"),
            {"fields": ("country_code", "national_prefix", "international_prefix")},
        ),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Trunk]:
        # Today's counts in the same query as the list: one join, conditional counts, no N+1.
        start, end = _today()
        today = Q(calls__received_at__gte=start, calls__received_at__lt=end)
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_offered=Count("calls", filter=today),
                n_accepted=Count("calls", filter=today & Q(calls__status=CallStatus.ACCEPTED)),
                n_refused=Count("calls", filter=today & Q(calls__status=CallStatus.REFUSED)),
                n_expired=Count("calls", filter=today & Q(calls__status=CallStatus.EXPIRED)),
            )
        )

    @admin.display(description=_("Offered today"), ordering="n_offered")
    def offered_today(self, trunk: Trunk) -> int:
        return trunk.n_offered  # type: ignore[attr-defined]

    @admin.display(description=_("Accepted"), ordering="n_accepted")
    def accepted_today(self, trunk: Trunk) -> int:
        return trunk.n_accepted  # type: ignore[attr-defined]

    @admin.display(description=_("Refused"), ordering="n_refused")
    def refused_today(self, trunk: Trunk) -> int:
        return trunk.n_refused  # type: ignore[attr-defined]

    @admin.display(description=_("Expired"), ordering="n_expired")
    def expired_today(self, trunk: Trunk) -> int:
        return trunk.n_expired  # type: ignore[attr-defined]

    @admin.display(description=_("Control Inbound Call at PBX"), ordering="pbx_control_inbound")
    def control_inbound_at_pbx(self, trunk: Trunk) -> str:
        return _at_pbx(trunk, trunk.pbx_control_inbound, alarming=trunk.screening_enabled)

    @admin.display(description=_("Call Status at PBX"), ordering="pbx_call_status")
    def call_status_at_pbx(self, trunk: Trunk) -> str:
        return _at_pbx(trunk, trunk.pbx_call_status, alarming=False)

    def get_urls(self) -> list[Any]:
        # Also a button above the list: actions need a selection, and a new install has no rows.
        sync = path(
            "sync/",
            self.admin_site.admin_view(self.sync_view),
            name="screening_trunk_sync",
        )
        return [sync, *super().get_urls()]

    def sync_view(self, request: HttpRequest) -> HttpResponseRedirect:
        if request.method == "POST" and self.has_add_permission(request):
            self._sync(request)
        return HttpResponseRedirect(reverse("admin:screening_trunk_changelist"))

    @admin.action(description=_("Sync trunks from PBX"), permissions=("add",))
    def sync_from_pbx(self, request: HttpRequest, queryset: QuerySet[Trunk]) -> None:
        self._sync(request)  # the selection does not matter: every PBX trunk is synced

    def _sync(self, request: HttpRequest) -> None:
        try:
            result = sync_trunks(PbxClient.from_settings())
        except PBX_PROBLEMS as exc:
            self.message_user(
                request,
                gettext("Could not read the PBX's trunks: %(error)s") % {"error": exc},
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            gettext(
                "Synced from the PBX: %(created)s created, %(updated)s updated, "
                "%(unchanged)s unchanged."
            )
            % {
                "created": len(result.created),
                "updated": len(result.updated),
                "unchanged": len(result.unchanged),
            },
            messages.SUCCESS,
        )
        if result.not_on_pbx:
            self.message_user(
                request,
                gettext("Not on the PBX (kept, for their call history): %(trunks)s")
                % {"trunks": ", ".join(result.not_on_pbx)},
                messages.WARNING,
            )
        if result.monitor is not None:
            self._monitor_messages(request, result.monitor)

    @admin.action(description=_("Check at the PBX (Control Inbound Call, Call Status)"))
    def check_at_pbx(self, request: HttpRequest, queryset: QuerySet[Trunk]) -> None:
        # Every trunk is read (one list at the PBX); the selection does not matter.
        try:
            result = check_monitors(PbxClient.from_settings())
        except PBX_PROBLEMS as exc:
            self.message_user(
                request,
                gettext("Could not read the PBX's Trunk Status Monitor: %(error)s")
                % {"error": exc},
                messages.ERROR,
            )
            return
        self.message_user(
            request,
            gettext(
                "Checked at the PBX: Control Inbound Call on for %(on)s, off for %(off)s, "
                "not in the PBX's monitor list: %(absent)s."
            )
            % {
                "on": len(result.controlled),
                "off": len(result.off),
                "absent": len(result.not_listed),
            },
            messages.SUCCESS,
        )
        self._monitor_messages(request, result)

    def _monitor_messages(self, request: HttpRequest, result: MonitorResult) -> None:
        if result.unscreened:
            self.message_user(
                request,
                gettext(
                    "Calls on these trunks are routed without being screened (Control Inbound "
                    "Call is not on at the PBX): %(trunks)s. Select them and use "
                    '"Turn on Control Inbound Call on the PBX".'
                )
                % {"trunks": ", ".join(result.unscreened)},
                messages.WARNING,
            )

    @admin.action(description=_("Turn on Control Inbound Call on the PBX"), permissions=("change",))
    def turn_on_control_inbound(self, request: HttpRequest, queryset: QuerySet[Trunk]) -> None:
        names = list(queryset.order_by("name").values_list("name", flat=True))
        try:
            enabled, missing = enable_control_inbound(PbxClient.from_settings(), names)
        except PBX_PROBLEMS as exc:
            self.message_user(
                request,
                gettext("The PBX did not take the change: %(error)s") % {"error": exc},
                messages.ERROR,
            )
            return
        if enabled:
            self.message_user(
                request,
                gettext("Control Inbound Call and Call Status turned on for: %(trunks)s")
                % {"trunks": ", ".join(enabled)},
                messages.SUCCESS,
            )
        if missing:
            self.message_user(
                request,
                gettext("Not found on the PBX: %(trunks)s") % {"trunks": ", ".join(missing)},
                messages.WARNING,
            )


def _at_pbx(trunk: Trunk, value: bool | None, *, alarming: bool) -> str:
    """A Trunk Status Monitor flag as last read from the PBX: on, OFF, not at PBX, not checked."""
    checked = trunk.pbx_monitor_checked_at
    if checked is None:
        return format_html(
            '<span class="pbx-flag" data-flag="{}">{}</span>', "unchecked", gettext("not checked")
        )
    when = gettext("read %(when)s") % {"when": f"{timezone.localtime(checked):%Y-%m-%d %H:%M}"}
    if value is True:
        return format_html(
            '<span class="pbx-flag" data-flag="on" title="{}">{}</span>', when, gettext("on")
        )
    word, flag = (gettext("OFF"), "off") if value is False else (gettext("not at PBX"), "absent")
    style = "color:#b00020;font-weight:bold" if alarming else ""
    return format_html(
        '<span class="pbx-flag" data-flag="{}" title="{}" style="{}">{}</span>',
        flag,
        when,
        style,
        word,
    )


@admin.register(Rule)
class RuleAdmin(CheckedAdmin):
    list_display = (
        "pattern",
        "match",
        "normalised",
        "trunk",
        "action",
        "enabled",
        "expires_at",
        "hit_count",
        "last_hit_at",
        "note",
        "reason",
        "created_by",
        "source_call_link",
    )
    list_filter = ("action", "match", "enabled", "trunk")
    list_select_related = ("trunk", "created_by", "source_call")
    search_fields = ("pattern", "normalised", "note")
    readonly_fields = (
        "normalised",
        "hit_count",
        "last_hit_at",
        "created_by",
        "created_at",
        "source_call_link",
        "pbx_blocked_at",
    )
    actions = ("push_to_pbx_block_list",)
    fields = (
        "pattern",
        "match",
        "trunk",
        "action",
        "expires_at",
        "enabled",
        "note",
        "reason",
        *readonly_fields,
    )

    # Rules made from a card ("Refuse and block", "Accept and always allow") name their call.
    @admin.display(description=_("From call"), ordering="source_call")
    def source_call_link(self, rule: Rule) -> str:
        if rule.source_call_id is None:
            return "-"
        url = reverse("call_detail", args=[rule.source_call_id])
        return format_html(
            '<a href="{}">{}</a>', url, gettext("Call #%(id)s") % {"id": rule.source_call_id}
        )

    def save_model(self, request: HttpRequest, obj: Rule, form: Any, change: bool) -> None:
        if not change and request.user.is_authenticated:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    @admin.action(
        description=_("Push permanent blocks to the PBX block list"), permissions=("change",)
    )
    def push_to_pbx_block_list(self, request: HttpRequest, queryset: QuerySet[Rule]) -> None:
        """screening.pbx.blocklist: one list named for the product, found, created or merged."""
        try:
            result = push_permanent_blocks(PbxClient.from_settings(), queryset)
        except PBX_PROBLEMS as exc:
            self.message_user(
                request,
                gettext("The PBX did not take the block list: %(error)s") % {"error": exc},
                messages.ERROR,
            )
            return
        if result.pushed:
            numbers = ", ".join(rule.pattern for rule in result.pushed)
            said = (
                gettext("PBX block list %(name)r created (%(size)s numbers on it): %(numbers)s")
                if result.created
                else gettext(
                    "PBX block list %(name)r updated (%(size)s numbers on it): %(numbers)s"
                )
            )
            self.message_user(
                request,
                said % {"name": LIST_NAME, "size": result.list_size, "numbers": numbers},
                messages.SUCCESS,
            )
        if result.skipped:
            why = "; ".join(f"{rule.pattern}: {reason}" for rule, reason in result.skipped)
            self.message_user(
                request, gettext("Not pushed: %(why)s") % {"why": why}, messages.WARNING
            )


class ContactNumberInline(admin.TabularInline):
    model = ContactNumber
    fields = ("number", "label", "normalised")
    readonly_fields = ("normalised",)
    extra = 1


@admin.register(Contact)
class ContactAdmin(CheckedAdmin):
    list_display = ("name", "organisation", "numbers_shown", "source", "updated_at")
    list_filter = ("source",)
    search_fields = ("name", "organisation", "numbers__number")
    inlines = (ContactNumberInline,)
    fields = ("name", "organisation", "note", "source", "external_id", "created_at", "updated_at")
    # Made here means "manual" (the model's default); the other sources write their own rows.
    readonly_fields = ("source", "external_id", "created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Contact]:
        return super().get_queryset(request).prefetch_related("numbers")

    @admin.display(description=_("Numbers"))
    def numbers_shown(self, contact: Contact) -> str:
        return ", ".join(number.number for number in contact.numbers.all())

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Contact], search_term: str
    ) -> tuple[QuerySet[Contact], bool]:
        """Name and organisation as Django searches them, plus a number in any format:
        "+44 7700 900123", "07700900123" and "0044 7700 900 123" find the same contact, and
        four or more digits find the numbers that contain them."""
        found, duplicates = super().get_search_results(request, queryset, search_term)
        wanted = normalise(search_term.strip())
        if not wanted:
            return found, duplicates
        match = Q(numbers__normalised=wanted)
        digits = re.sub(r"\D", "", search_term)
        if len(digits) >= 4:
            match |= Q(numbers__normalised__contains=digits)
        return found | queryset.filter(match), True

    def save_model(self, request: HttpRequest, obj: Contact, form: Any, change: bool) -> None:
        if change:
            obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)


class ReadOnlyAdmin(CheckedAdmin):
    """Calls and their audit trail are evidence: nobody adds, edits or deletes them here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditInline(admin.TabularInline):
    model = AuditEvent
    fields = ("at", "kind", "actor", "message", "detail")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _erased(caller: str) -> bool:
    """No number left to erase: withheld, or pseudonymised already."""
    return not caller or pseudonyms.is_token(caller)


@admin.register(Call)
class CallAdmin(ReadOnlyAdmin):
    list_display = (
        "received_at",
        "caller",
        "called",
        "trunk",
        "status",
        "decided_by_kind",
        "decided_by",
    )
    list_filter = ("status", "decided_by_kind", "trunk")
    search_fields = ("caller", "called", "pbx_call_id")
    date_hierarchy = "received_at"
    inlines = (AuditInline,)
    list_select_related = ("trunk", "decided_by")
    actions = ("erase_callers",)

    # Erasure (screening.calls.erasure) rewrites audit rows and deletes contacts and notes: only
    # superusers, whatever model permissions a staff user holds.
    def has_erase_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    @admin.action(description=_("Erase these callers' numbers everywhere"), permissions=("erase",))
    def erase_callers(self, request: HttpRequest, queryset: QuerySet[Call]) -> HttpResponse | None:
        """Asks first (a page listing what each number would lose), then erases on confirm."""
        rows = queryset.order_by().values_list("caller", "caller_key")
        # In international form, which reads as the same number whatever the call's trunk.
        numbers = sorted(
            {f"+{key}" if key else caller for caller, key in rows if not _erased(caller)}
        )
        if not numbers:
            self.message_user(
                request, gettext("The selected calls hold no number to erase."), messages.WARNING
            )
            return None
        if request.POST.get("confirm") != "yes":
            return self._confirm_erasure(request, numbers, selected=queryset)
        self._erase(request, numbers)
        return None

    def get_urls(self) -> list[Any]:
        erase = path(
            "erase/", self.admin_site.admin_view(self.erase_view), name="screening_call_erase"
        )
        return [erase, *super().get_urls()]

    def erase_view(self, request: HttpRequest) -> HttpResponse:
        """Erase a number typed by hand: one a caller asked about may be in contacts or notes
        only, or on calls nobody can find in the list any more."""
        if not self.has_erase_permission(request):
            raise PermissionDenied
        typed = request.POST.get("number", "") if request.method == "POST" else ""
        error = ""
        if request.method == "POST":
            try:
                number = erasure.read(typed)
            except erasure.ErasureError as exc:
                error = str(exc)
            else:
                if request.POST.get("confirm") != "yes":
                    return self._confirm_erasure(request, [number.typed])
                self._erase(request, [number.typed])
                return HttpResponseRedirect(reverse("admin:screening_call_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Erase a caller's number"),
            "opts": self.model._meta,
            "typed": typed,
            "error": error,
        }
        return TemplateResponse(request, "admin/screening/call/erase_form.html", context)

    def _confirm_erasure(
        self, request: HttpRequest, numbers: list[str], selected: QuerySet[Call] | None = None
    ) -> TemplateResponse:
        previews = []
        for typed in numbers:
            try:
                previews.append((typed, erasure.preview(erasure.read(typed))))
            except erasure.ErasureError as exc:
                self.message_user(request, f"{typed}: {exc}", messages.ERROR)
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Erase these callers' numbers everywhere?"),
            "opts": self.model._meta,
            "previews": previews,
            "selected": [] if selected is None else list(selected.values_list("pk", flat=True)),
            "action": "erase_callers" if selected is not None else "",
            "typed": numbers[0] if selected is None else "",
        }
        return TemplateResponse(request, "admin/screening/call/erase_confirm.html", context)

    def _erase(self, request: HttpRequest, numbers: list[str]) -> None:
        erased, warnings = 0, []
        for typed in numbers:
            try:
                result = erasure.erase(typed, actor=request.user)
            except erasure.ErasureError as exc:
                self.message_user(request, f"{typed}: {exc}", messages.ERROR)
                continue
            erased += 1
            warnings += result.warnings()
        if erased:
            self.message_user(
                request,
                ngettext(
                    "Erased %(count)s number: its calls keep only a pseudonym, its notes and "
                    "contact numbers are gone, and the audit records the erasure (without the "
                    "number).",
                    "Erased %(count)s numbers: their calls keep only a pseudonym, their notes and "
                    "contact numbers are gone, and the audit records each erasure (without the "
                    "number).",
                    erased,
                )
                % {"count": erased},
                messages.SUCCESS,
            )
        for warning in warnings:
            self.message_user(request, warning, messages.WARNING)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "call", "kind", "actor", "message", "chain_seq")
    # Shown, never editable (as every field here): verify_audit checks them.
    readonly_fields = ("chain_seq", "chain_hash")
    list_filter = ("kind",)
    list_select_related = ("call", "actor")
    search_fields = ("call__pbx_call_id", "call__caller", "message")


@admin.register(CallerNote)
class CallerNoteAdmin(CheckedAdmin):
    """Operators write notes from the card; an admin can correct or remove a wrong one here (a
    note is the team's advice, not evidence: the audit keeps that it was written)."""

    list_display = ("number", "text", "author", "created_at", "expires_at", "call")
    list_select_related = ("author",)
    search_fields = ("number", "text")
    readonly_fields = ("number", "author", "created_at", "call")
    fields = ("number", "text", "expires_at", "author", "created_at", "call")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # notes are written about a call's number, from its card or page

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[CallerNote], search_term: str
    ) -> tuple[QuerySet[CallerNote], bool]:
        found, duplicates = super().get_search_results(request, queryset, search_term)
        number = normalise(search_term)  # any way the number is typed
        if number:
            found |= queryset.filter(number=number)
        return found, duplicates


@admin.register(ReviewAction)
class ReviewActionAdmin(ReadOnlyAdmin):
    """The review queue's answers (/review/): who approved or dismissed what, and when."""

    list_display = ("at", "kind", "subject", "approved", "by", "hidden_until", "rule")
    list_filter = ("kind", "approved")
    list_select_related = ("by", "rule")
    search_fields = ("subject",)


@admin.register(ApiToken)
class ApiTokenAdmin(ReadOnlyAdmin):
    """API tokens (screening.api.tokens): who holds which, when used, revoked. Keys are never
    shown (only their hash is kept): ``manage.py create_api_token`` prints a new one once."""

    list_display = ("name", "user", "prefix_shown", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("user",)
    search_fields = ("name", "user__username", "prefix")
    fields = ("user", "name", "prefix_shown", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ("revoke",)

    @admin.display(description=_("Key starts with"), ordering="prefix")
    def prefix_shown(self, token: ApiToken) -> str:
        return f"{token.prefix}…"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Revoking is a change; nothing else about a token can be edited.
        return request.user.has_perm("screening.change_apitoken")

    @admin.action(description=_("Revoke the selected tokens"), permissions=("change",))
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        count = tokens.revoke(queryset)
        self.message_user(
            request,
            ngettext("%(count)d token revoked.", "%(count)d tokens revoked.", count)
            % {"count": count},
            messages.SUCCESS,
        )


# --- Outgoing webhooks (docs/webhooks.md) ------------------------------------------------------


class WebhookEndpointForm(forms.ModelForm):
    """The secret is write-only: never shown back, kept when left blank on a change."""

    url = forms.CharField(
        label=_("URL"),
        max_length=webhook_endpoints.URL_CHARS,
        help_text=_("Where the events are POSTed (http:// or https://)."),
    )
    secret = forms.CharField(
        label=_("Secret"),
        required=False,
        max_length=webhook_endpoints.SECRET_CHARS,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=_(
            "Shared with the receiver, which checks the X-Pbxscreen-Signature header with it. "
            "Never shown again; leave blank to keep the current one."
        ),
    )
    events = forms.MultipleChoiceField(
        label=_("Events"),
        required=False,
        choices=list(EVENT_TYPES.items()),
        widget=forms.CheckboxSelectMultiple,
        help_text=_("None ticked: every event type, including types added later."),
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "secret", "events", "active")
        labels = {"active": _("Active")}

    def clean_url(self) -> str:
        return webhook_endpoints.clean_url(self.cleaned_data["url"])

    def clean_secret(self) -> str:
        secret = self.cleaned_data.get("secret") or ""
        if not secret and self.instance.pk:
            return self.instance.secret
        return webhook_endpoints.clean_secret(secret)

    def clean_events(self) -> list[str]:
        return webhook_endpoints.clean_events(self.cleaned_data.get("events") or [])


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(CheckedAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "active", "event_types", "created_at")
    list_filter = ("active",)
    search_fields = ("url",)

    @admin.display(description=_("Events"))
    def event_types(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events) if obj.events else str(_("all"))


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("at", "status_code", "latency_ms", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = _("attempt")
    verbose_name_plural = _("attempts")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "type",
        "endpoint",
        "call",
        "state",
        "attempts",
        "last_status",
        "last_latency_ms",
        "created_at",
        "delivered_at",
    )
    list_filter = ("state", "type", "endpoint")
    list_select_related = ("endpoint", "call")
    search_fields = ("event_id", "call__pbx_call_id")
    date_hierarchy = "created_at"
    inlines = (WebhookAttemptInline,)
    actions = ("redeliver",)

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("screening.change_webhookdelivery")

    @admin.action(
        description=_("Redeliver now (attempts so far are kept)"),
        permissions=("redeliver",),
    )
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = webhook_endpoints.redeliver(queryset)
        self.message_user(
            request,
            ngettext(
                "%(count)d delivery will be sent again now.",
                "%(count)d deliveries will be sent again now.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # old rows may be cleared; never edited
