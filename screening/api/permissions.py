"""The product's roles as DRF permissions: an API request may do exactly what its user may do
on the pages.

- operators decide calls (``screening.decide_call``; a trunk's operator group is checked per
  call, by screening.calls.decide_requests, as on the dashboard);
- supervisors read the audit log and the statistics (``screening.view_audit``);
- admins manage rules and contacts: staff with the model permission Django admin checks for the
  request's method (view, add, change, delete).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import permissions
from rest_framework.request import Request

from screening.calls.access import DECIDE_PERMISSION

VIEW_AUDIT = "screening.view_audit"
ACTIONS = {"GET": "view", "HEAD": "view", "OPTIONS": "view", "POST": "add", "PUT": "change"}
ACTIONS |= {"PATCH": "change", "DELETE": "delete"}


class IsOperator(permissions.IsAuthenticated):
    message = _("You are not allowed to decide calls.")

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and request.user.has_perm(DECIDE_PERMISSION)


class IsSupervisor(permissions.IsAuthenticated):
    message = _("You are not allowed to review calls and statistics.")

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and request.user.has_perm(VIEW_AUDIT)


class IsModelAdmin(permissions.IsAuthenticated):
    """Staff with the admin's model permission for the method, on the view's ``admin_model``."""

    message = _("You are not allowed to manage these in admin.")

    def has_permission(self, request: Request, view: Any) -> bool:
        if not super().has_permission(request, view) or not request.user.is_staff:
            return False
        action = ACTIONS.get(request.method or "", "change")
        opts = view.admin_model._meta
        return request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")
