from __future__ import annotations

from django.urls import include, path

from screening import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("calls/<int:pk>/<str:action>", views.decide, name="decide"),
    path("pbx/webhook", views.webhook, name="webhook"),
    path("healthz", views.healthz, name="healthz"),
    # Supervisors: audit log, call timelines, CSV export, statistics, live view.
    path("", include("screening.reports.urls")),
]
