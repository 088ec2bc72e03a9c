"""``Authorization: Token <key>`` for the API (DRF authentication class).

Listed before DRF's SessionAuthentication, so an anonymous request is answered 401 with
``WWW-Authenticate: Token``. A request that sends a Token header is judged by it alone: a wrong,
revoked or malformed key is a 401 even if the browser also has a session.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from screening.api import tokens
from screening.models import ApiToken

KEYWORD = "Token"


class TokenAuthentication(authentication.BaseAuthentication):
    """``request.auth`` is the ``ApiToken``; ``request.user`` its user."""

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _sep, rest = header.strip().partition(" ")
        if scheme.lower() != KEYWORD.lower():
            return None  # not ours: the session (or nobody)
        parts = rest.split()
        if len(parts) != 1:
            raise exceptions.AuthenticationFailed(
                _("Invalid token header: send “Authorization: Token <key>”.")
            )
        token = tokens.find(parts[0])
        if token is None:
            raise exceptions.AuthenticationFailed(_("Invalid or revoked token."))
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_("This token's user is inactive."))
        tokens.touch(token)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return f'{KEYWORD} realm="api"'
