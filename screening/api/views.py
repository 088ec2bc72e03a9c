"""Thin API views: parse, check the role (screening.api.permissions), call the module that does
the work, serialize. Every answer is JSON: 400 with the errors per field, 401 with
``WWW-Authenticate``, 403, 404, and the decide endpoints' own 409 / 410 / 502."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django import forms
from django.contrib.admin.models import ADDITION, CHANGE, DELETION
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from screening import runtime
from screening.api import changes, pagination, permissions
from screening.api import serializers as api
from screening.calls import decide_requests
from screening.models import MAX_PK, Contact, Rule
from screening.reports import stats, timeline


def _errors(form: forms.Form) -> dict[str, list[str]]:
    return {
        ("non_field_errors" if name == forms.forms.NON_FIELD_ERRORS else name): list(errors)
        for name, errors in form.errors.items()
    }


def _query_parameters(form_class: type[forms.Form]) -> list[OpenApiParameter]:
    """The schema's parameters, from the form that validates them (one list, never two)."""
    types = {
        forms.IntegerField: OpenApiTypes.INT,
        forms.BooleanField: OpenApiTypes.BOOL,
        forms.DateTimeField: OpenApiTypes.DATETIME,
        forms.DateField: OpenApiTypes.DATE,
    }
    found = []
    for name, field in form_class.base_fields.items():
        kind = next((t for cls, t in types.items() if isinstance(field, cls)), OpenApiTypes.STR)
        if isinstance(field, forms.ModelChoiceField):
            kind = OpenApiTypes.INT
        enum = None
        if isinstance(field, forms.ChoiceField) and not isinstance(field, forms.ModelChoiceField):
            enum = [value for value, _label in field.choices if value]
        found.append(
            OpenApiParameter(
                name,
                kind,
                OpenApiParameter.QUERY,
                description=str(field.help_text or field.label or ""),
                enum=enum,
            )
        )
    return found


# --- The schema and its reference ----------------------------------------------------------


class JsonErrors:
    """Refusals as JSON, like every other endpoint's, not in the view's own format (YAML for the
    schema, HTML for the reference)."""

    def handle_exception(self, exc: Exception) -> Response:
        self.request.accepted_renderer = JSONRenderer()  # type: ignore[attr-defined]
        self.request.accepted_media_type = "application/json"  # type: ignore[attr-defined]
        return super().handle_exception(exc)  # type: ignore[misc]


class Schema(JsonErrors, SpectacularAPIView):
    """The OpenAPI 3 schema of this API (YAML, or JSON with ``?format=json``)."""


class Docs(JsonErrors, SpectacularSwaggerView):
    """The API reference (Swagger UI from the drf-spectacular-sidecar package's static files)."""


# --- Calls ----------------------------------------------------------------------------------


class CallList(APIView):
    """The audit log's calls, with its filters and sort, newest first by default; cursor pages
    (follow ``next``)."""

    permission_classes = (permissions.IsSupervisor,)

    @extend_schema(
        operation_id="calls_list",
        parameters=_query_parameters(pagination.CallListForm),
        responses={200: api.CallPageSerializer},
    )
    def get(self, request: Request) -> Response:
        form = pagination.CallListForm(request.query_params)
        if not form.is_valid():
            return Response(_errors(form), status=400)
        found = pagination.page(request, form)
        return Response(api.CallPageSerializer(found).data)


class CallDetail(APIView):
    """One call with its timeline: every audit row, with times since its arrival."""

    permission_classes = (permissions.IsSupervisor,)

    @extend_schema(responses={200: api.CallDetailSerializer})
    def get(self, request: Request, pk: int) -> Response:
        row = timeline.call_row(pk) if pk <= MAX_PK else None
        if row is None:
            raise NotFound(_("No such call."))
        data = api.CallRowSerializer(row).data
        steps = timeline.timeline(pk, row.received_at)
        data["timeline"] = api.StepSerializer(steps, many=True).data
        return Response(data)


class CallDecide(APIView):
    """Accept or refuse a waiting call, exactly as the dashboard's buttons do (the first claim
    wins; the others get 409)."""

    permission_classes = (permissions.IsOperator,)
    action = ""  # set per route: accept or refuse

    @extend_schema(
        request=api.DecideSerializer,
        responses={
            200: api.DecidedSerializer,
            400: OpenApiResponse(description="A bad reason or note; nothing was decided"),
            404: OpenApiResponse(description="No such call"),
            409: api.DecidedSerializer,
            410: api.DecidedSerializer,
            502: api.DecidedSerializer,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        fields = _fields(request)
        claimed = decide_requests.claim_for(
            request.user, pk, self.action, lambda: fields, via=changes.via(request)
        )
        if isinstance(claimed, decide_requests.Claimed):
            if getattr(request, _COMPLETES_ON_LOOP, False):
                return _Claimed(claimed)  # decide_view completes it on the event loop
            # Called synchronously (no event loop of ours): the PBX request runs on the
            # server's loop, in a task that outlives us.
            claimed = async_to_sync(decide_requests.complete)(claimed)
        return Response(claimed.body, status=claimed.status)


_COMPLETES_ON_LOOP = "_pbxscreen_completes_on_loop"


class _Claimed(Response):
    """A won claim, answered once ``decide_view`` has carried it out."""

    def __init__(self, claimed: decide_requests.Claimed) -> None:
        super().__init__(None, status=202)
        self.claimed = claimed


def decide_view(action: str) -> Callable[..., Awaitable[HttpResponse]]:
    """``CallDecide`` for one action, as an async view: DRF's authentication, permissions and
    parsing and the claim run where Django runs a sync view (its sync thread), the PBX request
    and its answer on the event loop, so an API decision does not hold that one thread while the
    PBX answers (other API decisions of the process would wait for it)."""
    view = CallDecide.as_view(action=action)
    claim = sync_to_async(view, thread_sensitive=True)

    async def claim_and_complete(request: HttpRequest, pk: int) -> HttpResponse:
        response = await claim(request, pk=pk)
        if isinstance(response, _Claimed):
            answer = await decide_requests.complete(response.claimed)
            response.data, response.status_code = answer.body, answer.status
        return response

    async def decide(request: HttpRequest, pk: int) -> HttpResponse:
        setattr(request, _COMPLETES_ON_LOOP, True)
        # Carried to its end if the client goes away: once claimed, the call must reach the PBX.
        return await runtime.to_the_end(claim_and_complete(request, pk), f"api-decide-{pk}")

    functools.update_wrapper(decide, view)  # cls, initkwargs, csrf_exempt: as DRF's view
    return decide


def _fields(request: Request) -> dict[str, Any]:
    data = request.data  # a body DRF cannot parse is its 400
    if isinstance(data, QueryDict):
        return data.dict()
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": [_("The body must be a JSON object.")]})
    return data


# --- Statistics -----------------------------------------------------------------------------


class StatsQueryForm(forms.Form):
    """``from``, ``to`` and ``per``: the statistics page's ``start``, ``end`` and ``by``, checked
    by that page's form (screening.reports.stats.StatsForm)."""

    NAMES = {"from": "start", "to": "end", "per": "by"}

    def __init__(self, data: Any = None) -> None:
        super().__init__(data)
        self.page_form = stats.StatsForm(
            {page: self.data.get(ours) for ours, page in self.NAMES.items() if ours in self.data}
        )

    def full_clean(self) -> None:
        super().full_clean()
        mine = {page: ours for ours, page in self.NAMES.items()}
        for name, errors in self.page_form.errors.items():
            ours = mine.get(name)
            if ours not in self.errors:  # a field's own error is already there, once
                for error in errors:
                    self.add_error(ours, error)


StatsQueryForm.base_fields = {
    ours: stats.StatsForm.base_fields[page] for ours, page in StatsQueryForm.NAMES.items()
}


class Stats(APIView):
    """The statistics page's figures for a period of up to 400 days (default: the last 7)."""

    permission_classes = (permissions.IsSupervisor,)

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="First day (local)"),
            OpenApiParameter("to", OpenApiTypes.DATE, description="Last day, inclusive"),
            OpenApiParameter("per", OpenApiTypes.STR, enum=["day", "hour"]),
        ],
        responses={200: api.StatsSerializer},
    )
    def get(self, request: Request) -> Response:
        form = StatsQueryForm(request.query_params)
        if not form.is_valid():
            return Response(_errors(form), status=400)
        period = stats.resolve_period(form.page_form)
        return Response(api.StatsSerializer(stats.compute(period)).data)


# --- Rules and contacts (admins) ------------------------------------------------------------


class ById(CursorPagination):
    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = pagination.MAX_PAGE_SIZE


class AdminModelMixin:
    """Admin's permissions and history for the model; ``pk`` beyond any row id is a 404."""

    permission_classes = (permissions.IsModelAdmin,)
    pagination_class = ById
    http_method_names = ("get", "post", "patch", "delete", "head", "options")

    def get_object(self) -> Any:
        if int(self.kwargs["pk"]) > MAX_PK:
            raise Http404
        return super().get_object()  # type: ignore[misc]

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        obj = serializer.save(**self.created_extra())
        changes.record(self.request, obj, ADDITION)

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        obj = serializer.save(**self.updated_extra())
        changes.record(self.request, obj, CHANGE, list(serializer.validated_data))

    def perform_destroy(self, instance: Any) -> None:
        changes.record(self.request, instance, DELETION)
        instance.delete()

    def created_extra(self) -> dict[str, Any]:
        return {}

    def updated_extra(self) -> dict[str, Any]:
        return {}


class RuleMixin(AdminModelMixin):
    admin_model = Rule
    queryset = Rule.objects.select_related("trunk").order_by("id")
    serializer_class = api.RuleSerializer

    def created_extra(self) -> dict[str, Any]:
        return {"created_by": self.request.user}  # type: ignore[attr-defined]


class RuleList(RuleMixin, generics.ListCreateAPIView):
    """Screening rules (admins): list, or create one as admin would."""


class RuleDetail(RuleMixin, generics.RetrieveUpdateDestroyAPIView):
    """One screening rule (admins): read, change (PATCH) or delete it."""


class ContactMixin(AdminModelMixin):
    admin_model = Contact
    queryset = Contact.objects.prefetch_related("numbers").order_by("id")
    serializer_class = api.ContactSerializer

    def updated_extra(self) -> dict[str, Any]:
        return {"updated_at": timezone.now()}


class ContactList(ContactMixin, generics.ListCreateAPIView):
    """Contacts (admins) with their numbers: list, or create one."""


class ContactDetail(ContactMixin, generics.RetrieveUpdateDestroyAPIView):
    """One contact (admins): read, change (PATCH; ``numbers`` replaces them all) or delete it."""
