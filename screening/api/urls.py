"""``/api/v1/``: every route of the API (the tests walk this list for the permission matrix and
the schema)."""

from __future__ import annotations

from django.urls import path

from screening.api import schema, views  # schema: registers the token scheme with the schema
from screening.api.pagination import CallListForm
from screening.reports.params import takes_query

app_name = "api"

# Declared like the pages' parameters (screening.reports.params), so the walks of every query
# parameter of every page cover the API too.
call_list = takes_query(CallListForm)(views.CallList.as_view())
stats = takes_query(views.StatsQueryForm)(views.Stats.as_view())

urlpatterns = [
    path("schema/", views.Schema.as_view(), name="schema"),
    path("docs/", views.Docs.as_view(url_name="api:schema"), name="docs"),
    path("calls/", call_list, name="calls"),
    path("calls/<int:pk>/", views.CallDetail.as_view(), name="call"),
    path("calls/<int:pk>/accept", views.decide_view("accept"), name="accept"),
    path("calls/<int:pk>/refuse", views.decide_view("refuse"), name="refuse"),
    path("rules/", views.RuleList.as_view(), name="rules"),
    path("rules/<int:pk>/", views.RuleDetail.as_view(), name="rule"),
    path("contacts/", views.ContactList.as_view(), name="contacts"),
    path("contacts/<int:pk>/", views.ContactDetail.as_view(), name="contact"),
    path("stats/", stats, name="stats"),
]

__all__ = ["schema", "urlpatterns"]
