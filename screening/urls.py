from __future__ import annotations

from django.urls import include, path

from screening import metrics, views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    # Team memory (before the decide route, whose <str:action> would take these names too).
    path("calls/<int:pk>/reason", views.set_reason, name="call_reason"),
    path("calls/<int:pk>/notes", views.add_note, name="call_notes"),
    path("calls/<int:pk>/follow-up", views.follow_up, name="call_follow_up"),
    path("calls/<int:pk>/<str:action>", views.decide, name="decide"),
    path("preferences", views.set_preferences, name="preferences"),
    path("pbx/webhook", views.webhook, name="webhook"),
    path("healthz", views.healthz, name="healthz"),
    path("metrics", metrics.view, name="metrics"),
    # Supervisors: audit log, call timelines, CSV export, statistics, live view.
    path("", include("screening.reports.urls")),
]
