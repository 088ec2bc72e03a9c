"""Who gets in: every route walked from the URL conf, WebSocket auth and origin, CSRF, login
throttling, and PBX secrets kept out of logs and pages."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from pbxscreen.asgi import application
from screening.models import AuditEvent, Call
from screening.routing import websocket_urlpatterns
from screening.simulator import SimulatorThread
from tests.support.cluster import Cluster
from tests.support.live import make_user, session_for, start_server, wait_for

# Reachable without logging in, each for a reason. Everything else must refuse anonymous users.
ANONYMOUS_OK = {
    "login": "the login page",
    "admin:login": "the admin's login page",
    "admin-login": "the admin's login page, throttled (shadows admin:login)",
    "admin:logout": "logging out (only ends a session; shows 'logged out')",
    "healthz": "monitoring; shows no secrets (tested below)",
    "webhook": "the PBX; authenticated by its HMAC signature",
}
CSRF_EXEMPT_OK = {"webhook"}  # the PBX cannot send a CSRF token; the signature replaces it
LOGIN_PATHS = ("/login/", "/admin/login/")

SAMPLE = {"int": "1", "path": "x/y", "slug": "x", "uuid": str(uuid.UUID(int=1))}
_CONVERTER = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")
_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>[^()]*)\)")


def _fill_route(route: str) -> str:
    def one(match: re.Match[str]) -> str:
        conv, name = match["conv"] or "str", match["name"]
        if conv == "str":
            return "accept" if name == "action" else "x"
        return SAMPLE.get(conv, "1")

    return _CONVERTER.sub(one, route)


def _fill_regex(regex: str) -> str:
    def one(match: re.Match[str]) -> str:
        body = match["body"]
        if "|" in body and re.fullmatch(r"[\w|-]+", body):
            return body.split("|")[0]  # an alternation of names (the admin's app labels)
        return "1" if "\\d" in body else "x"

    text = _GROUP.sub(one, regex)
    return text.replace("^", "").replace("$", "").replace("\\", "")


def routes(
    patterns: list[Any] | None = None, prefix: str = "", namespace: str = ""
) -> Iterator[tuple[str, str]]:
    """(sample URL, name) for every pattern in the URL conf, new ones included."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        raw = str(pattern.pattern)
        part = _fill_regex(raw) if raw.startswith("^") or "(?P<" in raw else _fill_route(raw)
        if isinstance(pattern, URLResolver):
            ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from routes(pattern.url_patterns, prefix + part, ns)
        elif isinstance(pattern, URLPattern):
            yield "/" + prefix + part, f"{namespace}{pattern.name or raw}"


def all_routes() -> list[tuple[str, str]]:
    found = []
    for url, name in routes():
        resolve(url)  # a sample that does not resolve would test nothing: fail loudly
        found.append((url, name))
    assert len(found) > 10
    return found


def _refused(response: Any) -> bool:
    if response.status_code in {301, 302, 303}:
        return response["Location"].split("?")[0] in LOGIN_PATHS
    return response.status_code in {401, 403, 405}


@pytest.mark.django_db(transaction=True)
def test_every_route_refuses_anonymous_users() -> None:
    client = Client()
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
        if getattr(callback, "csrf_exempt", False):
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
    return ["/" + _fill_route(str(p.pattern)) for p in websocket_urlpatterns]


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


@pytest.mark.live
@pytest.mark.scaleout
def test_login_throttle_is_shared_by_every_web_process(cluster: Cluster) -> None:
    make_user("shared", password="right-horse-battery")

    def attempt(server_url: str, password: str) -> int:
        http = requests.Session()
        http.get(f"{server_url}/login/", timeout=5)
        token = http.cookies["csrftoken"]
        return http.post(
            f"{server_url}/login/",
            data={"username": "shared", "password": password, "csrfmiddlewaretoken": token},
            headers={"Referer": f"{server_url}/login/"},
            allow_redirects=False,
            timeout=5,
        ).status_code

    a, b = cluster.urls
    # Default limit 5: spread over both processes, the fifth wrong password locks the pair.
    codes = [attempt(a if i % 2 else b, "wrong") for i in range(5)]
    assert codes == [200, 200, 200, 200, 429], codes
    assert attempt(a, "right-horse-battery") == 429
    assert attempt(b, "right-horse-battery") == 429


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.live
def test_pbx_credentials_and_tokens_never_appear_in_logs_or_pages(
    transactional_db: None, tmp_path: Path
) -> None:
    secret = f"client-secret-{uuid.uuid4().hex}"
    sim = SimulatorThread(call_rate=0.0, client_secret=secret, window_seconds=3.0).start()
    seen_tokens: set[str] = set()

    def remember_tokens() -> None:
        seen_tokens.update(sim.sim._tokens)
        seen_tokens.update(sim.sim._refresh)

    server = start_server(
        tmp_path,
        {
            "PBX_BASE_URL": sim.base_url,
            "PBX_CLIENT_ID": sim.client_id,
            "PBX_CLIENT_SECRET": secret,
            "SCREEN_WINDOW_SECONDS": "3",
            "PBX_HEARTBEAT_SECONDS": "1",
            "LOG_LEVEL": "DEBUG",
        },
    )
    try:
        remember_tokens()
        admin = get_user_model().objects.create_superuser("boss", password="x" * 12)
        operator = session_for(server, make_user("op"))
        boss = session_for(server, admin)
        pages: dict[str, str] = {}
        for round_ in range(2):
            sent = sim.inject(f"0770090050{round_}", "020", "peer-to-41")
            call = wait_for(
                lambda sent=sent: Call.objects.filter(pbx_call_id=sent["call_id"]).first()
            )
            operator.post(f"{server.url}/calls/{call.pk}/accept", timeout=10)
            remember_tokens()
            sim.revoke_tokens()  # the next decision renews: a new token to keep secret
        # The listener's token is refused at the door (HTTP 401 carries the URL with the token).
        sim.set_faults(refuse_websocket=True)
        sim.drop_sockets()
        wait_for(lambda: server.health()["pbx_link"]["state"] == "down", timeout=10)
        sim.set_faults(refuse_websocket=False)
        wait_for(lambda: server.health()["pbx_link"]["state"] == "up", timeout=10)
        remember_tokens()
        call_pk = Call.objects.first().pk
        audit_pk = AuditEvent.objects.first().pk
        for path in (
            "/healthz",
            "/",
            "/admin/",
            "/admin/screening/call/",
            f"/admin/screening/call/{call_pk}/change/",
            "/admin/screening/auditevent/",
            f"/admin/screening/auditevent/{audit_pk}/change/",
            "/admin/screening/trunk/",
            "/no-such-page",
            "/calls/999/accept",
        ):
            pages[path] = boss.get(f"{server.url}{path}", timeout=10).text
        pages["POST decide, unknown"] = boss.post(f"{server.url}/calls/999/accept", timeout=10).text
    finally:
        server.stop()
        sim.stop()
    assert len(seen_tokens) >= 4, "the flow should have issued several tokens"
    audit_text = " ".join(f"{a.message} {a.detail}" for a in AuditEvent.objects.all()) + " ".join(
        f"{c.pbx_errmsg}" for c in Call.objects.all()
    )
    haystacks = {"server log": server.log(), "audit": audit_text, **pages}
    for where, text in haystacks.items():
        assert secret not in text, f"the client secret appears in {where}"
        for token in seen_tokens:
            assert token not in text, f"a PBX token appears in {where}"
    assert "access_token" not in server.log()
