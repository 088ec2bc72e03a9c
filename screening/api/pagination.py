"""Cursor pages of the call list: the audit log's keyset pagination (screening.reports.audit:
each page seeks on ``(sort key, id)`` after the last row of the one before, never OFFSET), so a
page deep in the list costs what the first costs, and calls arriving while a client walks the list
neither repeat nor skip a row it has not seen yet.

The cursors are the audit page's own ``after`` / ``before`` tokens; ``next`` and ``previous`` are
full URLs with the filters kept, to be followed as they are.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _
from rest_framework.request import Request

from screening.reports import audit

DEFAULT_PAGE_SIZE = audit.PAGE_SIZE
MAX_PAGE_SIZE = 500
CURSOR_PARAMS = ("after", "before")


class CallListForm(audit.AuditPageForm):
    """The list's query parameters: the audit log's filters, sort and cursors (the same names and
    validation as ``/audit/``), and the page size."""

    page_size = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_PAGE_SIZE,
        help_text=_("Rows per page, 1 to 500 (default 50)."),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for name in CURSOR_PARAMS:
            if name in self.errors:  # the page's message says it shows the first page instead
                self.errors[name] = self.error_class(
                    [_("Not a cursor of this list: follow “next” and “previous” as they are.")]
                )
        return data


def page(request: Request, form: CallListForm) -> dict[str, Any]:
    """One page of the list (``form`` is valid): its rows and the links to its neighbours."""
    data = form.cleaned_data
    ordering = audit.Ordering.parse(data.get("sort"))
    found = audit.fetch_page(
        audit.filter_calls(data),
        ordering,
        after=data.get("after") or None,
        before=data.get("before") or None,
        size=data.get("page_size") or DEFAULT_PAGE_SIZE,
    )
    return {
        "next": found.next_cursor and _link(request, "after", found.next_cursor),
        "previous": found.prev_cursor and _link(request, "before", found.prev_cursor),
        "results": found.rows,
    }


def _link(request: Request, name: str, cursor: str) -> str:
    params = request.query_params.copy()
    for param in CURSOR_PARAMS:
        params.pop(param, None)
    params[name] = cursor
    return request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
