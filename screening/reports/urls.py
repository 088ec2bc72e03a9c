from __future__ import annotations

from django.urls import path

from screening.reports import views

urlpatterns = [
    path("audit/", views.audit_list, name="audit"),
    path("audit/export.csv", views.audit_export, name="audit_export"),
    path("audit/<int:pk>/", views.call_detail, name="call_detail"),
    path("audit/<int:pk>/notes", views.call_note, name="call_note"),
    path("stats/", views.stats, name="stats"),
    path("review/", views.review, name="review"),
    path("supervisor/", views.supervisor, name="supervisor"),
    path("supervisor/state.json", views.supervisor_state, name="supervisor_state"),
]
