"""inline_middleware: Django's middleware run on the event loop when a hook does no I/O.

Under ASGI, stock ``MiddlewareMixin.__acall__`` sends every ``process_request`` and
``process_response`` (and the handler every sync ``process_view``) through
``sync_to_async(thread_sensitive=True)``: one hop to Django's single sync thread and back per
hook, fifteen for one decision with this project's middleware, each paying a context copy, an
executor hand-off and two event-loop wake-ups, and all requests of the process queueing for that
one thread. Most of these hooks only read headers and set attributes, so each class here runs its
hooks inline and hops only when one may touch a store: a session that will be saved, messages
that will be stored, a CSRF check that would parse a large or multipart body, the language and
time zone read from the session (which hops to the database pool, not the sync thread).

``settings.MIDDLEWARE`` keeps the stock names (Django's deploy checks look for them): the ASGI
handler (``asgi_handler``) builds each listed in ``speedups.INLINE_MIDDLEWARE`` from its inline
subclass here instead.

Relies on: ``MiddlewareMixin.__acall__`` being what ``__call__`` returns in async mode,
``BaseHandler.load_middleware`` reading ``settings.MIDDLEWARE``, and what each stock hook does
(Django 5.2), checked by tests/speedups/test_upstream.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth
from django.contrib.messages import middleware as messages
from django.contrib.sessions import middleware as sessions
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponse
from django.middleware import clickjacking, common, csrf, security

from screening import i18n, speedups
from screening.runtime import run_blocking

# A form body this small is parsed in memory (CSRF reads ``request.POST``); larger or multipart
# bodies may spill to disk, so their check hops to a thread as stock Django does.
INLINE_BODY_BYTES = 64 * 1024


class InlineHooks:
    """``MiddlewareMixin.__acall__`` with each hook run inline unless ``*_inline`` says no."""

    get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]

    def request_inline(self, request: HttpRequest) -> bool:
        return True

    def response_inline(self, request: HttpRequest, response: HttpResponse) -> bool:
        return True

    async def hop_request(self, request: HttpRequest) -> HttpResponse | None:
        return await sync_to_async(self.process_request, thread_sensitive=True)(request)  # type: ignore[attr-defined]

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = None
        if hasattr(self, "process_request"):
            if self.request_inline(request):
                response = self.process_request(request)
            else:
                response = await self.hop_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.response_inline(request, response):
                response = self.process_response(request, response)
            else:
                response = await sync_to_async(self.process_response, thread_sensitive=True)(
                    request, response
                )
        return response


class SecurityMiddleware(InlineHooks, security.SecurityMiddleware):
    pass


class CommonMiddleware(InlineHooks, common.CommonMiddleware):
    pass


class AuthenticationMiddleware(InlineHooks, auth.AuthenticationMiddleware):
    pass  # sets the lazy request.user / request.auser: the user is read where it is used


class XFrameOptionsMiddleware(InlineHooks, clickjacking.XFrameOptionsMiddleware):
    pass


class SessionMiddleware(InlineHooks, sessions.SessionMiddleware):
    def response_inline(self, request: HttpRequest, response: HttpResponse) -> bool:
        # Only a save touches the session store; cookies and Vary are set from memory.
        session = getattr(request, "session", None)
        return session is None or not (
            getattr(session, "modified", False) or settings.SESSION_SAVE_EVERY_REQUEST
        )


class MessageMiddleware(InlineHooks, messages.MessageMiddleware):
    def response_inline(self, request: HttpRequest, response: HttpResponse) -> bool:
        # Messages neither read nor added: update() stores nothing (nor loads the session).
        storage = getattr(request, "_messages", None)
        return storage is None or not (storage.used or storage.added_new)


class CsrfViewMiddleware(InlineHooks, csrf.CsrfViewMiddleware):
    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if self.async_mode:  # the handler takes a coroutine process_view as it is
            stock = self.process_view
            hop = sync_to_async(stock, thread_sensitive=True)

            async def process_view(
                request: HttpRequest, callback: Any, args: Any, kwargs: Any
            ) -> HttpResponse | None:
                if self._view_inline(request):
                    return stock(request, callback, args, kwargs)
                return await hop(request, callback, args, kwargs)

            self.process_view = process_view  # type: ignore[method-assign]

    def request_inline(self, request: HttpRequest) -> bool:
        return not settings.CSRF_USE_SESSIONS  # else the secret is read from the session

    def response_inline(self, request: HttpRequest, response: HttpResponse) -> bool:
        return not settings.CSRF_USE_SESSIONS  # else a rotated secret is saved in the session

    @staticmethod
    def _view_inline(request: HttpRequest) -> bool:
        if settings.CSRF_USE_SESSIONS:
            return False
        if request.method != "POST":
            return True
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return False
        return length <= INLINE_BODY_BYTES and request.content_type != "multipart/form-data"


class LocaleMiddleware(InlineHooks, i18n.LocaleMiddleware):
    def request_inline(self, request: HttpRequest) -> bool:
        return False  # reads the person's language from the session

    async def hop_request(self, request: HttpRequest) -> HttpResponse | None:
        # The database pool, not Django's one sync thread; the language and time zone it
        # activates come back with the context (asgiref restores context variables).
        return await run_blocking(self.process_request, request)


class InlineMiddlewareLoading:
    """A handler mixin: ``load_middleware`` builds the inline classes for the stock names. It
    runs once, when the handler is built (at import of the ASGI application, one thread)."""

    def load_middleware(self, is_async: bool = False) -> None:
        stock = settings.MIDDLEWARE
        settings.MIDDLEWARE = [speedups.INLINE_MIDDLEWARE.get(path, path) for path in stock]
        try:
            super().load_middleware(is_async)  # type: ignore[misc]
        finally:
            settings.MIDDLEWARE = stock


class InlineASGIHandler(InlineMiddlewareLoading, ASGIHandler):
    pass


def asgi_handler() -> ASGIHandler:
    """Django's ASGI handler, with the inline middleware when the speedup is on."""
    return InlineASGIHandler() if speedups.enabled("inline_middleware") else ASGIHandler()
