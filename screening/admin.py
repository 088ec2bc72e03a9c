from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from screening.models import AuditEvent, Call, Trunk


@admin.register(Trunk)
class TrunkAdmin(admin.ModelAdmin):
    list_display = ("name", "label", "screening_enabled", "operator_group", "auto_created")
    list_editable = ("label", "screening_enabled")
    list_filter = ("screening_enabled", "auto_created")
    search_fields = ("name", "label")


class ReadOnlyAdmin(admin.ModelAdmin):
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


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "call", "kind", "actor", "message")
    list_filter = ("kind",)
    list_select_related = ("call", "actor")
    search_fields = ("call__pbx_call_id", "call__caller", "message")
