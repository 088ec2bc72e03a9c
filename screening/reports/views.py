"""Thin views for supervisors: parse the request, call the report modules, render.

Each page's query parameters are one form's fields (``takes_query``); how an invalid one is
answered is in screening.reports.params."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.core.handlers.asgi import ASGIRequest
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from screening.calls import notes
from screening.calls.memory import ActionError
from screening.models import Call
from screening.reports import audit, charts, export, live, timeline
from screening.reports import review as review_queue
from screening.reports import stats as stats_module
from screening.reports.params import bad_request, takes_query

VIEW_AUDIT = "screening.view_audit"
PAGING_PARAMS = {"after", "before"}


def supervisor_only(view: Any) -> Any:
    return require_GET(login_required(permission_required(VIEW_AUDIT, raise_exception=True)(view)))


def _query(request: HttpRequest, drop: set[str], **extra: str) -> str:
    params = request.GET.copy()
    for key in drop | set(extra):
        params.pop(key, None)
    for key, value in extra.items():
        params[key] = value
    return params.urlencode()


@supervisor_only
@takes_query(audit.AuditPageForm)
def audit_list(request: HttpRequest) -> HttpResponse:
    form = audit.AuditPageForm(request.GET or None)
    params = audit.cleaned_filters(form) if request.GET else {}
    ordering = audit.Ordering.parse(params.get("sort"))
    after, before = params.get("after"), params.get("before")
    page = audit.fetch_page(audit.filter_calls(params), ordering, after=after, before=before)
    columns = [
        {
            "key": key,
            "label": audit.SORTS[key].label,
            "query": _query(request, PAGING_PARAMS | {"sort"}, sort=ordering.toggled(key)),
            "aria_sort": (
                ("descending" if ordering.descending else "ascending")
                if key == ordering.sort.key
                else None
            ),
        }
        for key in audit.SORTS
    ]
    return render(
        request,
        "screening/audit.html",
        {
            "form": form,
            "page": page,
            "ordering": ordering,
            "columns": {c["key"]: c for c in columns},
            "next_query": page.next_cursor
            and _query(request, PAGING_PARAMS, after=page.next_cursor),
            "prev_query": page.prev_cursor
            and _query(request, PAGING_PARAMS, before=page.prev_cursor),
            "first_query": _query(request, PAGING_PARAMS),
            "export_query": _query(request, PAGING_PARAMS),
            "is_first_page": not (after or before),
            "page_size": audit.PAGE_SIZE,
        },
    )


@supervisor_only
@takes_query(audit.AuditFilterForm)
def audit_export(request: HttpRequest) -> HttpResponse:
    form = audit.AuditFilterForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        # A file of other rows than asked for would mislead: nothing, and why.
        return bad_request(form)
    filters = form.cleaned_data if form.is_bound else {}
    ordering = audit.Ordering.parse(filters.get("sort"))
    qs = audit.filter_calls(filters)

    def chunks() -> Any:
        return export.iter_csv(qs, ordering)

    # Under ASGI a synchronous iterator would be collected into a list first (see export).
    content = export.aiter_csv(chunks) if isinstance(request, ASGIRequest) else chunks()
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="pbxscreen-audit-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


@supervisor_only
@takes_query(timeline.TimelineForm)
def call_detail(request: HttpRequest, pk: int) -> HttpResponse:
    form = timeline.TimelineForm(request.GET or None)
    if form.is_bound and not form.is_valid():
        return bad_request(form)
    return _detail(request, pk, form.cleaned_data["back"] if form.is_bound else "")


def _detail(
    request: HttpRequest, pk: int, back: str, note_form: dict[str, Any] | None = None
) -> HttpResponse:
    row = timeline.call_row(pk)
    if row is None:
        raise Http404("No such call")
    number = Call.objects.filter(pk=pk).values_list("caller_key", flat=True).first() or ""
    context = {
        "row": row,
        "steps": timeline.timeline(pk, row.received_at),
        "back_query": back,
        "number": number,
        "notes": notes.notes_page(number),
        "now": timezone.now(),
        "note_form": note_form or {},
    }
    status = 400 if note_form and note_form.get("error") else 200
    return render(request, "screening/audit_detail.html", context, status=status)


@require_POST
@login_required
@permission_required(VIEW_AUDIT, raise_exception=True)
def call_note(request: HttpRequest, pk: int) -> HttpResponse:
    """The note form on a call's page: add it, then back to the page (or the page again with
    what was wrong, keeping what was typed)."""
    back = request.POST.get("back", "")[:2048]
    try:
        notes.add_note(pk, request.user, request.POST.dict())
    except Call.DoesNotExist as exc:
        raise Http404("No such call") from exc
    except ActionError as exc:
        typed = {k: request.POST.get(k, "")[:600] for k in ("text", "expires_at")}
        return _detail(request, pk, back, {**typed, "error": exc.message})
    query = QueryDict(mutable=True)
    if back:
        query["back"] = back
    url = reverse("call_detail", args=[pk])
    return HttpResponseRedirect(f"{url}?{query.urlencode()}#notes" if back else f"{url}#notes")


SERIES_COLOURS = {
    "accepted": (gettext_lazy("Accepted"), "#106b2f"),
    "refused": (gettext_lazy("Refused"), "#a5161b"),
    "expired": (gettext_lazy("Expired (PBX routed it)"), "#b45309"),
    "gone": (gettext_lazy("Gone"), "#6b7280"),
    "failed": (gettext_lazy("Failed"), "#6d28d9"),
}


@supervisor_only
@takes_query(stats_module.StatsForm)
def stats(request: HttpRequest) -> HttpResponse:
    form = stats_module.StatsForm(request.GET or None)
    period = stats_module.resolve_period(form)
    result = stats_module.compute(period)
    labels = [b.label for b in result.buckets]
    per = "hour" if period.by == "hour" else "day"
    hourly = per == "hour"
    dates = {
        "first": date_format(period.first, "j M Y"),
        "last": date_format(period.last, "j M Y"),
    }
    outcome_chart = charts.bar_chart(
        "chart-outcomes",
        _("Calls per hour by outcome") if hourly else _("Calls per day by outcome"),
        (
            _(
                "Stacked bars: accepted, refused, expired, gone and failed calls per hour, "
                "%(first)s to %(last)s."
            )
            if hourly
            else _(
                "Stacked bars: accepted, refused, expired, gone and failed calls per day, "
                "%(first)s to %(last)s."
            )
        )
        % dates,
        labels,
        [
            charts.Series(label, colour, [getattr(b.counts, key) for b in result.buckets])
            for key, (label, colour) in SERIES_COLOURS.items()
        ],
    )
    window_ms = result.window_ms
    timing_chart = charts.line_chart(
        "chart-timing",
        _("Operator decision time per hour") if hourly else _("Operator decision time per day"),
        _(
            "Median and 90th percentile of the time from arrival to an operator's decision, "
            "against the PBX window of %(seconds)s s."
        )
        % {"seconds": f"{window_ms / 1000:g}"},
        labels,
        [
            charts.Series(_("Median"), "#1d4ed8", [b.timing.median_ms for b in result.buckets]),
            charts.Series(
                _("90th percentile"), "#b45309", [b.timing.p90_ms for b in result.buckets]
            ),
        ],
        unit="s",
        reference=(_("window %(seconds)s s") % {"seconds": f"{window_ms / 1000:g}"}, window_ms),
    )
    hour_chart = charts.bar_chart(
        "chart-hours",
        _("Expiry rate by hour of day"),
        _("Share of offered calls that expired (the PBX routed them itself), by hour of day."),
        [f"{h:02d}" for h in range(24)],
        [
            charts.Series(
                _("Expired"), "#b45309", [g.counts.expiry_rate for g in result.by_hour_of_day]
            )
        ],
        unit="%",
        max_value=charts.nice_max(
            max((g.counts.expiry_rate or 0) * 100 for g in result.by_hour_of_day) or 1
        )
        / 100,
    )
    trunk_chart = charts.hbar_chart(
        "chart-trunks",
        _("Expiry rate by trunk"),
        _("Share of each trunk's offered calls that expired."),
        [(g.label, g.counts.expiry_rate) for g in result.by_trunk],
        "#b45309",
    )
    operator_chart = charts.hbar_chart(
        "chart-operators",
        _("Expiry rate while each operator was working"),
        _(
            "Share of calls on the operator's trunks that expired during the hours in which the "
            "operator decided at least one call."
        ),
        [(o.label, o.expiry_rate) for o in result.by_operator],
        "#b45309",
    )
    return render(
        request,
        "screening/stats.html",
        {
            "form": form,
            "period": period,
            "stats": result,
            "per": per,
            "window_s": window_ms / 1000,
            "outcome_chart": outcome_chart,
            "timing_chart": timing_chart,
            "hour_chart": hour_chart,
            "trunk_chart": trunk_chart,
            "operator_chart": operator_chart,
            "legend": SERIES_COLOURS.values(),
            "presets": _presets(),
            "agreement": stats_module.suggestion_agreement(period),
        },
    )


def _presets() -> list[tuple[str, str]]:
    today = timezone.localdate()
    this_month = today.replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    return [
        (_("Last 7 days"), ""),
        (_("Last 7 days per hour"), "by=hour"),
        (_("This month"), f"month={this_month:%Y-%m}"),
        (_("Last month"), f"month={last_month:%Y-%m}"),
    ]


@supervisor_only
def supervisor(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "screening/supervisor.html",
        {
            "state": live.state(),
            "refresh_seconds": 3,
            "margin_ms": settings.SCREEN_SAFETY_MARGIN_SECONDS * 1000,
        },
    )


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
@permission_required(VIEW_AUDIT, raise_exception=True)
def review(request: HttpRequest) -> HttpResponse:
    """The review queue; a POST approves or dismisses one item, then back to the page."""
    now = timezone.now()
    if request.method == "POST":
        form = review_queue.ReviewForm(request.POST)
        if not form.is_valid():
            return bad_request(form)
        try:
            done = review_queue.act(form.cleaned_data, request.user, now)
        except review_queue.NotInQueue as exc:
            messages.warning(request, str(exc))
        else:
            messages.success(request, review_queue.describe(done))
        return redirect("review")
    return render(
        request,
        "screening/review.html",
        {
            "blocks": review_queue.block_suggestions(now),
            "wrong": review_queue.wrong_refusals(now),
            "rules": review_queue.rules_to_review(now),
            "history": review_queue.history(),
            "min_refusals": settings.REVIEW_MIN_REFUSALS,
            "window_days": settings.REVIEW_WINDOW_DAYS,
            "callbacks": settings.REVIEW_CALLBACK_COUNT,
        },
    )


@require_GET
def supervisor_state(request: HttpRequest) -> JsonResponse:
    # JSON callers get JSON errors, not a login page.
    if not request.user.is_authenticated:
        return JsonResponse({"ok": False, "error": _("Log in first.")}, status=401)
    if not request.user.has_perm(VIEW_AUDIT):
        return JsonResponse({"ok": False, "error": _("You may not view this.")}, status=403)
    response = JsonResponse({"ok": True, **live.state()})
    response["Cache-Control"] = "no-store"
    return response
