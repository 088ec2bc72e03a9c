"""Who gets in: every route walked from the URL conf, WebSocket auth and origin, CSRF, login
throttling, and PBX secrets kept out of logs and pages."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import resolve
from rest_framework.views import APIView

from pbxscreen.asgi import application
from screening.models import Call
from screening.routing import websocket_urlpatterns
from tests.support.live import make_user
from tests.support.routes import all_routes, fill_route

# Reachable without logging in, each for a reason. Everything else must refuse anonymous users.
ANONYMOUS_OK = {
    "login": "the login page",
    "admin:login": "the admin's login page",
    "admin-login": "the admin's login page, throttled (shadows admin:login)",
    "admin:logout": "logging out (only ends a session; shows 'logged out')",
    "healthz": "monitoring; state words only, no detail (tests/e2e/test_healthz_live.py)",
    "webhook": "the PBX; authenticated by its HMAC signature",
    "javascript-catalog": "the pages' translations, public text; the login page loads it too",
}
CSRF_EXEMPT_OK = {
    "webhook": "the PBX cannot send a CSRF token; the signature replaces it",
    "metrics": "read-only: any method but GET is a 405 before anything runs",
}
LOGIN_PATHS = ("/login/", "/admin/login/")


def _refused(response: Any) -> bool:
    if response.status_code in {301, 302, 303}:
        return response["Location"].split("?")[0] in LOGIN_PATHS
    return response.status_code in {401, 403, 405}


@pytest.mark.django_db(transaction=True)
def test_every_route_refuses_anonymous_users() -> None:
    # From afar: /metrics serves loopback without a token (a scraper on the same host).
    client = Client(REMOTE_ADDR="203.0.113.9")
    leaks = []
    for url, name in all_routes():
        if name in ANONYMOUS_OK or url.startswith("/static/"):
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if not _refused(response):
                leaks.append(f"{method.upper()} {url} ({name}) -> {response.status_code}")
    assert not leaks, "\n".join(leaks)


@pytest.mark.django_db(transaction=True)
def test_every_state_changing_request_needs_a_csrf_token() -> None:
    admin = get_user_model().objects.create_superuser("root", password="x" * 12)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    missing = []
    for url, name in all_routes():
        callback = resolve(url).func
        # DRF exempts its views from Django's middleware and checks CSRF itself, for requests
        # authenticated by the session (a token is never sent by a browser on its own): walked
        # like every other view below.
        checks_itself = issubclass(getattr(callback, "cls", object), APIView)
        if getattr(callback, "csrf_exempt", False) and not checks_itself:
            if name not in CSRF_EXEMPT_OK:
                missing.append(f"{url} ({name}) is csrf_exempt")
            continue
        for method in ("post", "put", "patch", "delete"):
            response = getattr(client, method)(url)
            if response.status_code != 403 or b"CSRF" not in response.content:
                missing.append(f"{method.upper()} {url} ({name}) -> {response.status_code}")
    assert not missing, "\n".join(missing)
    assert not Call.objects.exists()


def _ws_connect(path: str, headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any]:
    async def attempt() -> tuple[bool, Any]:
        # The router itself, not the wrapper that starts the sweeper on the first request.
        communicator = WebsocketCommunicator(application.app, path, headers=headers)
        connected, code = await communicator.connect(timeout=5)
        if connected:
            # Accepted then closed at once would still be a refusal; anything else is a leak.
            output = await communicator.receive_output(timeout=5)
            await communicator.disconnect()
            return output.get("type") != "websocket.close", output
        return False, code

    return async_to_sync(attempt)()


def ws_paths() -> list[str]:
    return ["/" + fill_route(str(p.pattern)) for p in websocket_urlpatterns]


@pytest.mark.django_db(transaction=True)
def test_every_websocket_route_refuses_anonymous_users_and_foreign_origins() -> None:
    user = make_user("wsop")
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    good_origin = (b"origin", b"http://localhost")
    for path in ws_paths():
        assert not _ws_connect(path, [good_origin])[0], f"{path} accepted an anonymous user"
        assert not _ws_connect(path, [(b"origin", b"https://evil.example"), (b"cookie", cookie)])[
            0
        ], f"{path} accepted a foreign Origin"
        assert not _ws_connect(path, [(b"cookie", cookie)])[0], f"{path} accepted no Origin"
        # The control case: the same operator from the right origin gets in.
        assert _ws_connect(path, [good_origin, (b"cookie", cookie), (b"host", b"localhost")])[0]


# --- login throttling -----------------------------------------------------------------------


def _login(client: Client, username: str, password: str, addr: str = "10.0.0.1") -> Any:
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=addr)


@pytest.mark.django_db
@override_settings(LOGIN_FAILURE_LIMIT=3, LOGIN_LOCKOUT_SECONDS=120)
def test_repeated_wrong_passwords_lock_that_username_from_that_address() -> None:
    make_user("victim", password="right-horse-battery")
    client = Client()
    for _ in range(2):
        assert _login(client, "victim", "wrong").status_code == 200
    locked = _login(client, "victim", "wrong")
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    assert b"Try again in 2 minutes" in locked.content
    assert locked["Retry-After"] == "120"
    # Even the right password waits: the guesser must not learn it was right.
    assert _login(client, "victim", "right-horse-battery").status_code == 429
    # Someone else's address, or another username, is not affected.
    assert _login(Client(), "victim", "right-horse-battery", addr="10.0.0.2").status_code == 302
    assert _login(Client(), "other", "wrong").status_code == 200


@pytest.mark.django_db
@override_settings(LOGIN_FAILURE_LIMIT=3, LOGIN_LOCKOUT_SECONDS=60)
def test_a_successful_login_resets_the_count_and_the_admin_login_is_throttled_too() -> None:
    make_user("ok", password="right-horse-battery")
    client = Client()
    assert _login(client, "ok", "wrong").status_code == 200
    assert _login(client, "ok", "wrong").status_code == 200
    assert _login(client, "ok", "right-horse-battery").status_code == 302
    assert _login(Client(), "ok", "wrong").status_code == 200  # counting starts again
    admin = Client()
    for _ in range(2):
        answer = admin.post("/admin/login/", {"username": "root", "password": "no"})
        assert answer.status_code == 200
    assert admin.post("/admin/login/", {"username": "root", "password": "no"}).status_code == 429
