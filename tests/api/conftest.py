"""The API's callers, one per role, each with a personal token (screening.api.tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from screening.api import tokens
from tests.support.live import make_user


@dataclass
class Caller:
    """A test client sending one ``Authorization`` header (or none)."""

    role: str
    client: Client
    user: Any = None
    key: str = ""

    def headers(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Token {self.key}"} if self.key else {}

    def call(self, method: str, url: str, body: Any = None, **extra: Any) -> Any:
        send = getattr(self.client, method.lower())
        if body is None:
            return send(url, **self.headers(), **extra)
        return send(url, body, content_type="application/json", **self.headers(), **extra)


def admin_user(username: str = "api-admin") -> Any:
    """Staff with admin's model permissions on rules and contacts (not a superuser)."""
    user = make_user(username, group=None, is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="screening",
            content_type__model__in=("rule", "contact", "contactnumber"),
        )
    )
    return user


def with_token(role: str, user: Any, name: str = "script") -> Caller:
    return Caller(role, Client(), user, tokens.issue(user, name).key)


@pytest.fixture
def callers(db: None) -> dict[str, Caller]:
    """Anonymous, a made-up token, a revoked token, and a token for each role."""
    operator = make_user("api-op")
    revoked = with_token("revoked", make_user("api-gone"))
    tokens.revoke(revoked.user.api_tokens.all())
    return {
        "anonymous": Caller("anonymous", Client()),
        "bad_token": Caller("bad_token", Client(), key="pbxs_" + "x" * 43),
        "revoked": revoked,
        "operator": with_token("operator", operator),
        "supervisor": with_token("supervisor", make_user("api-sup", group="Supervisors")),
        "admin": with_token("admin", admin_user()),
    }
