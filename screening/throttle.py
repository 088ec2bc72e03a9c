"""Login throttling: after LOGIN_FAILURE_LIMIT wrong passwords for one username from one address,
that pair is refused for LOGIN_LOCKOUT_SECONDS.

Counted in the cache, which is Redis in the scale-out setup, so every web process shares the count.
Per username *and* address: someone guessing cannot lock a real operator out from elsewhere.
No sleeping: the login view runs in Django's single thread for sync code under ASGI, and a sleep
there would stall every other sync request of the process.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def _key(kind: str, username: str, address: str) -> str:
    ident = hashlib.sha256(f"{username.strip().lower()}\0{address}".encode()).hexdigest()[:32]
    return f"login-{kind}:{ident}"


def client_address(request: HttpRequest) -> str:
    # Daphne puts the browser's address here; behind nginx, from X-Forwarded-For when
    # PROXY_HEADERS=true (never trust that header from the open internet).
    return str(request.META.get("REMOTE_ADDR", "") or "unknown")


def locked_for(username: str, address: str) -> float:
    """Seconds this pair is still refused (0 when it may try)."""
    until = cache.get(_key("lock", username, address))
    return max(0.0, float(until) - time.time()) if until else 0.0


def record_failure(username: str, address: str) -> bool:
    """Count a wrong password; True when this one locks the pair out."""
    window = settings.LOGIN_LOCKOUT_SECONDS
    key = _key("fail", username, address)
    cache.add(key, 0, timeout=window)
    try:
        failures = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window)
        failures = 1
    if failures < settings.LOGIN_FAILURE_LIMIT:
        return False
    cache.set(_key("lock", username, address), time.time() + window, timeout=window)
    cache.delete(key)
    return True


def record_success(username: str, address: str) -> None:
    cache.delete_many([_key("fail", username, address), _key("lock", username, address)])


def refusal(request: HttpRequest, seconds: float) -> HttpResponse:
    minutes = max(1, math.ceil(seconds / 60))
    message = (
        "Too many failed logins for this username from your address. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )
    response = render(
        request, "registration/login.html", {"throttled": message, "next": ""}, status=429
    )
    response["Retry-After"] = str(math.ceil(seconds))
    return response


def protect(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Throttle any login view that re-renders its form (200) on a wrong password and redirects
    on success: Django's LoginView and the admin's login alike."""

    def throttled(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username = str(request.POST.get("username", ""))[:150]
        address = client_address(request)
        wait = locked_for(username, address)
        if wait:
            return refusal(request, wait)
        response = view(request, *args, **kwargs)
        if response.status_code == 200:  # the form came back: wrong credentials
            if record_failure(username, address):
                return refusal(request, settings.LOGIN_LOCKOUT_SECONDS)
        elif response.status_code in {301, 302, 303}:
            record_success(username, address)
        return response

    throttled.__name__ = getattr(view, "__name__", "login")
    throttled.__doc__ = view.__doc__
    return throttled


class ThrottledLoginView(LoginView):
    """The site's login page, throttled per username and address (see module docstring)."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return protect(super().post)(request, *args, **kwargs)
