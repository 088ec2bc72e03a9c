"""Who may read /metrics: with METRICS_TOKEN only its bearer, without it only this host's own
clients that did not come through a proxy. Every refusal is plain text, 401 or 403, never a 500."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse
from django.test import Client, RequestFactory

from pbxscreen.settings import env_token
from screening import metrics
from tests.metrics.scrape import TOKEN, Samples

pytestmark = pytest.mark.django_db


def get(remote_addr: str = "127.0.0.1", **headers: str) -> HttpResponse:
    request = RequestFactory().get("/metrics", REMOTE_ADDR=remote_addr, headers=headers)
    return asyncio.run(metrics.view(request))


def assert_refused(response: HttpResponse, status: int) -> None:
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/plain")
    assert b"pbxscreen_" not in response.content
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.fixture
def token(settings: Any) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def test_with_the_token_set_its_bearer_reads_the_metrics_from_anywhere(token: str) -> None:
    for address in ("127.0.0.1", "203.0.113.9", "2001:db8::1"):
        response = get(address, Authorization=f"Bearer {token}")
        assert response.status_code == 200, address
        assert response["Content-Type"].startswith("text/plain; version=0.0.4")
        samples = Samples.parse(response.content.decode())
        assert "pbxscreen_calls_received" in samples.families
    assert get(Authorization=f"bearer   {token}  ").status_code == 200  # scheme in any case


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer wrong",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN} {TOKEN}",
        f"Basic {TOKEN}",
        f"Token {TOKEN}",
        TOKEN,
        "Bearer é€漢字",
        "Bearer " + "A" * 100_000,
        "Bearer \x00\x01",
    ],
)
def test_with_the_token_set_anything_but_its_bearer_is_refused_with_401(
    token: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    # Loopback too: behind nginx every request comes from there.
    assert_refused(get("127.0.0.1", **headers), 401)


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_without_a_token_this_hosts_own_clients_read_the_metrics(
    settings: Any, address: str
) -> None:
    settings.METRICS_TOKEN = ""
    assert get(address).status_code == 200


@pytest.mark.parametrize(
    "address", ["10.0.0.5", "192.168.1.20", "2001:db8::1", "::ffff:10.0.0.1", "", "garbage", "::"]
)
def test_without_a_token_other_clients_are_refused_with_403(settings: Any, address: str) -> None:
    settings.METRICS_TOKEN = ""
    assert_refused(get(address), 403)
    assert_refused(get(address, Authorization=f"Bearer {TOKEN}"), 403)


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"Forwarded": "for=203.0.113.9"},
        {"X-Real-IP": "1.2.3.4"},
    ],
)
def test_without_a_token_a_request_through_a_proxy_is_refused_even_from_loopback(
    settings: Any, header: dict[str, str]
) -> None:
    settings.METRICS_TOKEN = ""
    assert_refused(get("127.0.0.1", **header), 403)


def test_the_url_answers_plain_text_for_every_method(token: str) -> None:
    client = Client(enforce_csrf_checks=True)
    assert client.get("/metrics").status_code == 401
    ok = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    refused = client.post("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 405
    assert refused["Content-Type"].startswith("text/plain")
    assert client.post("/metrics").status_code == 401


@pytest.mark.parametrize(
    "value",
    [
        "short",
        "has space inside-0123456789",
        "tab\tinside-0123456789",
        "ünïcode-0123456789abcdef",
        "newline\ninside-0123456789",
    ],
)
def test_a_bad_metrics_token_setting_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("METRICS_TOKEN", value)
    with pytest.raises(ImproperlyConfigured, match="METRICS_TOKEN"):
        env_token("METRICS_TOKEN")


def test_a_good_metrics_token_setting_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_TOKEN", f"  {TOKEN}\n")
    assert env_token("METRICS_TOKEN") == TOKEN
    monkeypatch.setenv("METRICS_TOKEN", "   ")
    assert env_token("METRICS_TOKEN") == ""


def test_a_plain_http_scrape_is_not_redirected_to_https(token: str, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True  # production: Prometheus scrapes each process over http
    client = Client()
    assert client.get("/login/").status_code == 301  # the control: pages are redirected
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
