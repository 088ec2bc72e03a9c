"""Login throttling, decided before any password is hashed.

Three limits guard every login form (the site's and the admin's, see ``protect``):

- **per account and address**: after ``LOGIN_FAILURE_LIMIT`` wrong passwords for one account from
  one address, that pair is refused for ``LOGIN_LOCKOUT_SECONDS``. The account is the user the
  authentication backend would find for the username (its id), or the username as the login form
  normalises it when no such user exists: every spelling Django maps to one account (a fullwidth
  letter, a ligature, a decomposed accent, surrounding spaces) shares one counter. Per address as
  well, so someone guessing cannot lock a real operator out from elsewhere.
- **per address**: after ``LOGIN_ADDRESS_FAILURE_LIMIT`` wrong passwords from one address, for any
  usernames, that address is refused for ``LOGIN_LOCKOUT_SECONDS``.
- **per process**: at most ``LOGIN_CONCURRENT_CHECKS`` password checks run at once and
  ``LOGIN_CHECK_QUEUE`` more wait; beyond that the answer is 503 at once, without hashing.

Each attempt *reserves* its place in both counters (an atomic cache ``add``/``incr``) before the
password is checked, and gives it back when the password was right or never checked. So N
parallel attempts get at most the limit's number of password checks, whatever their timing.

Why a process-wide gate: under ASGI, Django runs each request's sync view in a thread of its own
(``ThreadSensitiveContext`` per request), so nothing else bounds how many logins hash at once, and
PBKDF2 releases the GIL: a flood of logins would take every core from the decision path.

Counted in the cache, which is Redis in the scale-out setup, so every web process shares the
counts. When the cache cannot be reached the throttle cannot count, so a login is refused with
503 ("try again shortly") rather than let through unthrottled.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from screening import health

log = logging.getLogger("screening.throttle")

CHECK_WAIT_SECONDS = 20.0  # queued longer than this (nginx waits 30 s for an answer): 503
BUSY_RETRY_SECONDS = 5
CACHE_RETRY_SECONDS = 30


class CacheUnavailable(Exception):
    """The throttle's counters could not be read or written."""


# --- who is trying ----------------------------------------------------------------------------


def client_address(request: HttpRequest) -> str:
    # Daphne puts the browser's address here; behind nginx, from X-Forwarded-For when
    # PROXY_HEADERS=true (never trust that header from the open internet).
    return str(request.META.get("REMOTE_ADDR", "") or "unknown")


def normalized_username(raw: str) -> str | None:
    """The username exactly as the login form hands it to the authentication backend: stripped,
    then NFKC-normalised (``UsernameField``); None when the form refuses it (a NUL character)."""
    username_field = AuthenticationForm().fields["username"]
    try:
        return str(username_field.clean(raw))
    except ValidationError:
        return None


def account(raw: str) -> str:
    """The account a username as typed reaches: looked up as ``ModelBackend`` looks it up
    (``get_by_natural_key``), so whatever the database counts as equal (a case-insensitive
    collation, say) shares one counter; a username that reaches no user is its own account."""
    username = normalized_username(raw)
    if username is None:
        # No backend ever looks up a username the form refuses, and neither may we: PostgreSQL
        # refuses a NUL in a query. It still names a counter, so the attempt counts.
        return f"name:{raw.strip()}"
    user_model = get_user_model()
    try:
        user = user_model._default_manager.get_by_natural_key(username)
    except user_model.DoesNotExist:
        return f"name:{username}"
    return f"user:{user.pk}"


def _key(kind: str, *parts: str) -> str:
    ident = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]
    return f"login-{kind}:{ident}"


# --- counting in the cache --------------------------------------------------------------------


def _reserve(key: str, window: int) -> int:
    """Count one more attempt under ``key`` atomically; the count including this one. The first
    attempt starts a window of ``window`` seconds."""
    for _attempt in range(3):
        if cache.add(key, 1, timeout=window):
            return 1
        try:
            count = int(cache.incr(key))
        except ValueError:  # expired between add and incr: start a new window
            continue
        if count == 1:
            # The key expired between the Redis backend's EXISTS and INCR, and INCR made a new
            # one without an expiry: give it the window, or it would count forever.
            cache.touch(key, window)
        return count
    raise CacheUnavailable(f"could not count under {key}")


def _release(key: str) -> None:
    """Give back a reservation whose password was right or never checked."""
    with contextlib.suppress(ValueError):  # the window ended meanwhile: nothing to give back
        cache.decr(key)


def _remaining(lock_key: str) -> float:
    until = cache.get(lock_key)
    return max(0.0, float(until) - time.time()) if until else 0.0


@dataclass
class Attempt:
    """One login POST's places in the two counters (reserved by ``begin``)."""

    keys: dict[str, str]
    address_count: int = 0
    account_count: int = 0
    refused_for: float = 0.0  # > 0: refused, seconds to wait
    refused_why: str = ""  # "account" or "address"

    @classmethod
    def begin(cls, account_name: str, address: str) -> Attempt:
        k = {
            "address": _key("fail-address", address),
            "address_lock": _key("lock-address", address),
            "account": _key("fail", account_name, address),
            "account_lock": _key("lock", account_name, address),
        }
        attempt = cls(keys=k)
        window = settings.LOGIN_LOCKOUT_SECONDS
        # Locked already: refused without counting (the common case under a flood).
        for lock, why in (("address_lock", "address"), ("account_lock", "account")):
            wait = _remaining(k[lock])
            if wait:
                attempt.refused_for, attempt.refused_why = wait, why
                return attempt
        # Refused below means no password is checked, so the place is given back: the counters
        # count checked wrong passwords (and the checks under way), never refusals.
        attempt.address_count = _reserve(k["address"], window)
        if attempt.address_count > settings.LOGIN_ADDRESS_FAILURE_LIMIT:
            _release(k["address"])
            # The check that reached the limit may still be running, so no lock yet: its length.
            attempt.refused_for = _remaining(k["address_lock"]) or window
            attempt.refused_why = "address"
            return attempt
        attempt.account_count = _reserve(k["account"], window)
        if attempt.account_count > settings.LOGIN_FAILURE_LIMIT:
            _release(k["account"])
            _release(k["address"])
            attempt.refused_for = _remaining(k["account_lock"]) or window
            attempt.refused_why = "account"
        return attempt

    def cancel(self) -> None:
        """No password was checked: give both reservations back."""
        _release(self.keys["account"])
        _release(self.keys["address"])

    def succeeded(self) -> None:
        # The right password: the account's count starts again, as it would for the real user.
        cache.delete_many([self.keys["account"], self.keys["account_lock"]])
        _release(self.keys["address"])

    def failed(self) -> str:
        """A wrong password, counted already; what it locked ("" when nothing)."""
        window = settings.LOGIN_LOCKOUT_SECONDS
        locked = ""
        for counter, lock, count, limit in (
            ("account", "account_lock", self.account_count, settings.LOGIN_FAILURE_LIMIT),
            ("address", "address_lock", self.address_count, settings.LOGIN_ADDRESS_FAILURE_LIMIT),
        ):
            if count == limit:  # this attempt held the last place: lock from now
                cache.set(self.keys[lock], time.time() + window, timeout=window)
                cache.touch(self.keys[counter], window)  # stays over the limit while locked
                locked = locked or counter
        return locked


# --- at most a few password checks at once ------------------------------------------------------


class CheckGate:
    """At most ``concurrency`` password checks at once in this process and ``queue`` waiting;
    ``admit`` says False at once when the queue is full (or after ``wait`` seconds queued)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.running = 0
        self.waiting = 0

    @contextmanager
    def admit(self, concurrency: int, queue: int, wait: float) -> Iterator[bool]:
        with self._cond:
            if self.running >= concurrency and self.waiting >= queue:
                admitted = False
            else:
                self.waiting += 1
                try:
                    admitted = self._cond.wait_for(lambda: self.running < concurrency, wait)
                finally:
                    self.waiting -= 1
                if admitted:
                    self.running += 1
        try:
            yield admitted
        finally:
            if admitted:
                with self._cond:
                    self.running -= 1
                    self._cond.notify()


checks = CheckGate()


# --- the answers --------------------------------------------------------------------------------


def _page(
    request: HttpRequest, status: int, seconds: float, message: str, *, mismatch: bool = False
) -> HttpResponse:
    response = render(
        request,
        "registration/login.html",
        {"throttled": message, "mismatch": mismatch, "next": ""},
        status=status,
    )
    response["Retry-After"] = str(max(1, math.ceil(seconds)))
    return response


def refusal(
    request: HttpRequest, seconds: float, why: str, *, mismatch: bool = False
) -> HttpResponse:
    minutes = max(1, math.ceil(seconds / 60))
    message = (
        ngettext(
            "Too many failed logins for this username from your address. "
            "Try again in %(minutes)s minute.",
            "Too many failed logins for this username from your address. "
            "Try again in %(minutes)s minutes.",
            minutes,
        )
        if why == "account"
        else ngettext(
            "Too many failed logins from your address. Try again in %(minutes)s minute.",
            "Too many failed logins from your address. Try again in %(minutes)s minutes.",
            minutes,
        )
    ) % {"minutes": minutes}
    return _page(request, 429, seconds, message, mismatch=mismatch)


def busy(request: HttpRequest) -> HttpResponse:
    message = _("The server is busy with other logins. Try again in a few seconds.")
    return _page(request, 503, BUSY_RETRY_SECONDS, message)


def unavailable(request: HttpRequest) -> HttpResponse:
    message = _("Logging in is not possible right now. Try again shortly.")
    return _page(request, 503, CACHE_RETRY_SECONDS, message)


# --- the view wrapper -----------------------------------------------------------------------------


def _after_check(step: Callable[[], Any]) -> Any:
    """Bookkeeping after the view answered: a cache failure here is logged, and the answer
    stands (a wrong password was counted when it was reserved)."""
    try:
        return step()
    except health.CACHE_ERRORS as exc:
        log.error("login throttle: the cache failed after a login attempt (%s)", exc)
        return None


def protect(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Throttle any login view that re-renders its form (200) on a wrong password and redirects
    on success: Django's LoginView and the admin's login alike."""

    def throttled(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        address = client_address(request)
        typed = str(request.POST.get("username", ""))
        try:
            attempt = Attempt.begin(account(typed), address)
        except (CacheUnavailable, *health.CACHE_ERRORS) as exc:
            log.error("login refused: the throttle cannot reach the cache (%s)", exc)
            return unavailable(request)
        if attempt.refused_for:
            return refusal(request, attempt.refused_for, attempt.refused_why)
        with checks.admit(
            settings.LOGIN_CONCURRENT_CHECKS, settings.LOGIN_CHECK_QUEUE, CHECK_WAIT_SECONDS
        ) as admitted:
            response = view(request, *args, **kwargs) if admitted else None
        if response is None:
            _after_check(attempt.cancel)
            return busy(request)
        if response.status_code == 200:  # the form came back: wrong credentials
            locked = _after_check(attempt.failed)
            if locked:
                return refusal(request, settings.LOGIN_LOCKOUT_SECONDS, locked, mismatch=True)
        elif response.status_code in {301, 302, 303}:
            _after_check(attempt.succeeded)
        else:
            _after_check(attempt.cancel)
        return response

    throttled.__name__ = getattr(view, "__name__", "login")
    throttled.__doc__ = view.__doc__
    return throttled


class ThrottledLoginView(LoginView):
    """The site's login page, throttled (see the module docstring)."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return protect(super().post)(request, *args, **kwargs)
