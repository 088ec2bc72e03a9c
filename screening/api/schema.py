"""drf-spectacular's description of the API's own authentication class, so the schema (and the
reference at /api/v1/docs/) show ``Authorization: Token <key>`` beside the session cookie."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "screening.api.authentication.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A personal key from `manage.py create_api_token`, sent as "
            "`Authorization: Token <key>`.",
        }
