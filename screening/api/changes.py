"""Rules and contacts written through the API: recorded where admin records its own changes
(``django.contrib.admin``'s LogEntry, shown in each object's "History"), naming the API token, and
logged. The audit trail (``AuditEvent``) is about calls; the product does not audit rule edits
there, so neither does the API."""

from __future__ import annotations

import logging

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db import models
from rest_framework.request import Request

from screening.api import tokens
from screening.models import ApiToken

log = logging.getLogger("screening.api.changes")

VERBS = {ADDITION: "Added", CHANGE: "Changed", DELETION: "Deleted"}


def via(request: Request) -> str:
    """How the audit and the history name the request's way in."""
    return tokens.via(request.auth if isinstance(request.auth, ApiToken) else None)


def record(request: Request, obj: models.Model, flag: int, fields: list[str] | None = None) -> None:
    """One history entry for ``obj`` (call before deleting it), and a log line."""
    what = f" ({', '.join(sorted(fields))})" if fields else ""
    message = f"{VERBS[flag]}{what} via {via(request)}."
    LogEntry.objects.log_actions(
        request.user.pk,
        type(obj)._default_manager.filter(pk=obj.pk),
        flag,
        change_message=message,
        single_object=True,
    )
    log.info(
        "%s %s #%s %s by %s",
        type(obj)._meta.model_name,
        VERBS[flag].lower(),
        obj.pk,
        f"via {via(request)}",
        request.user.get_username(),
    )
