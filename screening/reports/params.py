"""The query parameters of the supervisor pages: each page declares its parameters as the fields of
one form (``takes_query``), and the form validates them, so no value reaches a query or a date
computation unchecked.

Dates are bounded (``EARLIEST``..``LATEST``) so that everything a page derives from them stays
representable: a month's end, the day after the last day, the local day's start in UTC with any
time-zone offset (±14 h), hour buckets. (Python's and the databases' dates end at 9999-12-31:
``?month=9999-12`` would otherwise overflow on the way to its end.)

How an invalid parameter is answered, the same everywhere:

- a page with a filter form (the audit log, the statistics): 200, the error shown next to its
  field, the page computed without that value;
- anything else (the CSV export, a call's timeline): 400 with the errors, as text.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any, TypeVar

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpResponse
from django.utils.translation import gettext as _

EARLIEST = date(1900, 1, 1)
LATEST = date(9998, 12, 31)

View = TypeVar("View", bound=Callable[..., Any])


def takes_query(form_class: type[forms.Form]) -> Callable[[View], View]:
    """Declare that a view reads the GET parameters ``form_class`` defines (and only those).

    The attribute survives Django's decorators (``functools.wraps`` copies it), so tools and tests
    find every page's parameters from the URL resolver."""

    def declare(view: View) -> View:
        view.query_form = form_class  # type: ignore[attr-defined]
        return view

    return declare


def check_date_range(value: date | datetime | None, shown: str = "%Y-%m-%d") -> None:
    """A date (or a datetime's local date) outside ``EARLIEST``..``LATEST`` is an error."""
    if value is None:
        return
    day = value.date() if isinstance(value, datetime) else value
    if not EARLIEST <= day <= LATEST:
        raise ValidationError(
            _("Pick a date from %(first)s to %(last)s.")
            % {"first": EARLIEST.strftime(shown), "last": LATEST.strftime(shown)},
            code="out_of_range",
        )


class BoundedDateField(forms.DateField):
    def validate(self, value: Any) -> None:
        super().validate(value)
        formats = list(self.input_formats)
        check_date_range(value, "%Y-%m" if formats == ["%Y-%m"] else "%Y-%m-%d")


class BoundedDateTimeField(forms.DateTimeField):
    def validate(self, value: Any) -> None:
        super().validate(value)
        check_date_range(value)


def bad_request(form: forms.Form) -> HttpResponse:
    """The 400 of a page without a filter form: every error, one per line, as text."""
    lines = [
        f"{name}: {' '.join(errors)}" if name != NON_FIELD_ERRORS else " ".join(errors)
        for name, errors in form.errors.items()
    ]
    return HttpResponse(
        _("Invalid query parameters.") + "\n" + "\n".join(lines) + "\n",
        status=400,
        content_type="text/plain; charset=utf-8",
    )
