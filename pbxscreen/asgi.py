"""ASGI entry point: HTTP through Django, WebSockets through Channels (auth and origin checks)."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pbxscreen.settings")

import django

django.setup(set_prefix=False)  # as get_asgi_application(), before anything imports models

from screening.speedups.middleware import asgi_handler  # noqa: E402

django_http: Any = asgi_handler()  # Django's ASGIHandler (inline middleware: screening/speedups)

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

if settings.SERVE_STATIC:
    django_http = ASGIStaticFilesHandler(django_http)

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from pbxscreen.origin import SameOriginValidator  # noqa: E402
from screening import startup  # noqa: E402
from screening.routing import websocket_urlpatterns  # noqa: E402


class ServerProcess:
    """Wraps the router: on the first scope, arms this process on the server's event loop
    (``screening.startup.start``: the push path's loop, the sweeper), for a plain ``daphne``
    command line; under ``manage.py serve`` that has already happened and this is a no-op."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.started = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not self.started:
            self.started = True
            await startup.start()
        await self.app(scope, receive, send)


application = ServerProcess(
    ProtocolTypeRouter(
        {
            "http": django_http,
            "websocket": SameOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
