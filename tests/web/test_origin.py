"""The WebSocket Origin check, walked as a table through the whole WebSocket stack.

Every row is an operator's handshake with a valid session cookie: whether the socket opens (and
the snapshot, with the callers' numbers, arrives) depends only on the Origin against the request's
own scheme, host and port and CSRF_TRUSTED_ORIGINS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings

from pbxscreen.asgi import application
from tests.support.live import make_user

pytestmark = pytest.mark.django_db(transaction=True)

HOSTS = ["localhost", "127.0.0.1", "[::1]", "screen.example.com", "testserver"]
TRUSTED = ["https://screen.example.com", "https://*.corp.example", "http://*.lan.example:8080"]


@dataclass
class Row:
    origin: str | list[str] | None  # None: no Origin header; a list: that many headers
    host: str | None = "127.0.0.1:8000"
    opens: bool = False
    secure: bool = False  # the socket is wss
    headers: dict[str, str] = field(default_factory=dict)


TABLE: dict[str, Row] = {
    # the request's own origin
    "own origin": Row("http://127.0.0.1:8000", opens=True),
    "own origin, wss": Row("https://127.0.0.1:8000", opens=True, secure=True),
    "port mismatch": Row("http://127.0.0.1:9999"),
    "scheme mismatch, default port": Row("https://127.0.0.1"),
    "scheme mismatch, same port": Row("https://127.0.0.1:8000"),
    "http origin on a wss socket": Row("http://127.0.0.1:8000", secure=True),
    "host mismatch, other allowed host": Row("http://localhost:8000"),
    "host mismatch and port": Row("http://localhost:1234"),
    "foreign host": Row("https://evil.example"),
    "default port spelled out (http)": Row("http://localhost:80", host="localhost", opens=True),
    "default port in Host only": Row("http://localhost", host="localhost:80", opens=True),
    "default port spelled out (https)": Row(
        "https://localhost:443", host="localhost", opens=True, secure=True
    ),
    "https default port is not http's": Row("https://localhost:80", host="localhost", secure=True),
    "uppercase host in Origin": Row("http://LOCALHOST:8000", host="localhost:8000", opens=True),
    "uppercase Host header": Row("http://localhost:8000", host="LocalHost:8000", opens=True),
    "uppercase scheme": Row("HTTP://127.0.0.1:8000", opens=True),
    "IPv6 literal": Row("http://[::1]:8000", host="[::1]:8000", opens=True),
    "IPv6 literal, other port": Row("http://[::1]:8001", host="[::1]:8000"),
    "IPv6 literal, other address": Row("http://[::2]:8000", host="[::1]:8000"),
    "IPv6 literal, broken": Row("http://[::1:8000", host="[::1]:8000"),
    "userinfo": Row("http://a@127.0.0.1:8000"),
    "userinfo with password": Row("http://a:b@127.0.0.1:8000"),
    "trailing dot in Origin only": Row("http://localhost.:8000", host="localhost:8000"),
    "trailing dot in Host only": Row("http://localhost:8000", host="localhost.:8000"),
    "trailing dot on both (same origin)": Row(
        "http://localhost.:8000", host="localhost.:8000", opens=True
    ),
    "path": Row("http://127.0.0.1:8000/"),
    "query": Row("http://127.0.0.1:8000?x"),
    "fragment": Row("http://127.0.0.1:8000#x"),
    "empty port": Row("http://127.0.0.1:"),
    "port out of range": Row("http://127.0.0.1:99999"),
    "other scheme": Row("ws://127.0.0.1:8000"),
    "file scheme": Row("file://127.0.0.1:8000"),
    "null": Row("null"),
    "empty": Row(""),
    "no Origin": Row(None),
    "two Origin headers": Row(["http://127.0.0.1:8000", "http://127.0.0.1:8000"]),
    "whitespace": Row(" http://127.0.0.1:8000"),
    "non-ASCII": Row("http://127.0.0.1:8000\u00e9"),
    # Host must be an allowed host, even when the Origin matches it
    "same origin on a host not allowed": Row("http://evil.example:8000", host="evil.example:8000"),
    "no Host header": Row("http://127.0.0.1:8000", host=None),
    # behind the TLS proxy: X-Forwarded-Proto (SECURE_PROXY_SSL_HEADER) decides the scheme
    "proxy says https": Row(
        "https://127.0.0.1:8000", opens=True, headers={"x-forwarded-proto": "https"}
    ),
    "proxy says https, http origin": Row(
        "http://127.0.0.1:8000", headers={"x-forwarded-proto": "https"}
    ),
    "proxy says http on a wss socket": Row(
        "http://127.0.0.1:8000", opens=True, secure=True, headers={"x-forwarded-proto": "http"}
    ),
    # CSRF_TRUSTED_ORIGINS, exact and wildcard
    "trusted": Row("https://screen.example.com", opens=True),
    "trusted, default port spelled out": Row("https://screen.example.com:443", opens=True),
    "trusted host, other scheme": Row("http://screen.example.com"),
    "trusted host, other port": Row("https://screen.example.com:8443"),
    "trusted host's subdomain (no wildcard)": Row("https://www.screen.example.com"),
    "wildcard subdomain": Row("https://a.corp.example", opens=True),
    "wildcard deeper subdomain": Row("https://a.b.corp.example", opens=True),
    "wildcard's own domain (as CSRF)": Row("https://corp.example", opens=True),
    "wildcard, lookalike domain": Row("https://evilcorp.example"),
    "wildcard, other scheme": Row("http://a.corp.example"),
    "wildcard, other port": Row("https://a.corp.example:8443"),
    "wildcard with port": Row("http://x.lan.example:8080", opens=True),
    "wildcard with port, default port": Row("http://x.lan.example"),
}


def handshake(row: Row, cookie: bytes) -> str:
    """What the operator's socket does: "opened" (the snapshot came), "refused", or a crash."""
    headers = [(b"cookie", cookie)]
    origins = [row.origin] if isinstance(row.origin, str) else row.origin or []
    headers += [(b"origin", origin.encode()) for origin in origins]
    if row.host is not None:
        headers.append((b"host", row.host.encode()))
    headers += [(name.encode(), value.encode()) for name, value in row.headers.items()]

    async def attempt() -> str:
        communicator = WebsocketCommunicator(application.app, "/ws/operator/", headers=headers)
        if row.secure:
            communicator.scope["scheme"] = "wss"
        try:
            connected, _ = await communicator.connect(timeout=5)
            if not connected:
                return "refused"
            message = await communicator.receive_output(timeout=5)
        except Exception as exc:  # a crash is a failure of its own, never a refusal
            return f"crashed ({exc!r})"
        await communicator.disconnect()
        snapshot = message.get("type") == "websocket.send" and "snapshot" in message["text"]
        return "opened" if snapshot else "refused"

    return async_to_sync(attempt)()


@override_settings(ALLOWED_HOSTS=HOSTS, CSRF_TRUSTED_ORIGINS=TRUSTED)
def test_the_origin_must_match_scheme_host_and_port() -> None:
    client = Client()
    client.force_login(make_user("olly"))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    outcomes = {name: handshake(row, cookie) for name, row in TABLE.items()}
    wrong = [
        f"{name}: Origin {row.origin!r}, Host {row.host!r}: {outcomes[name]}"
        for name, row in TABLE.items()
        if outcomes[name] != ("opened" if row.opens else "refused")
    ]
    assert not wrong, "\n".join(wrong)
    assert sum(row.opens for row in TABLE.values()) >= 15  # both outcomes are walked


@override_settings(ALLOWED_HOSTS=HOSTS, CSRF_TRUSTED_ORIGINS=["screen.example.com", "https://"])
def test_a_malformed_trusted_origin_trusts_nothing() -> None:
    client = Client()
    client.force_login(make_user("olly"))
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    assert handshake(Row("https://screen.example.com"), cookie) == "refused"
    assert handshake(Row("http://screen.example.com"), cookie) == "refused"
    assert handshake(Row("http://127.0.0.1:8000"), cookie) == "opened"  # its own still works
