"""The PBX listener's own /metrics (`pbx_listen --metrics-port`): the same rule and body as the
web processes', from a process that has no web server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.core.management import CommandError, call_command

from screening import metrics
from tests.metrics.scrape import TOKEN, Samples, scrape
from tests.support.live import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def served() -> Iterator[str]:
    server = metrics.serve_in_thread(0)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_listeners_metrics_need_the_token_when_it_is_set(served: str, settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN
    samples = scrape(served)
    assert "pbxscreen_calls_received" in samples.families
    assert samples.has("pbxscreen_pbx_link_up")
    for headers in ({}, {"Authorization": "Bearer nope-nope-nope-nope"}, {"Authorization": TOKEN}):
        answer = requests.get(f"{served}/metrics", headers=headers, timeout=10)
        assert answer.status_code == 401
        assert answer.headers["Content-Type"].startswith("text/plain")
        assert "pbxscreen_" not in answer.text
    answer = requests.get(
        f"{served}/other", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert answer.status_code == 404


def test_the_listeners_metrics_without_a_token_are_for_this_host_not_a_proxy(
    served: str, settings: Any
) -> None:
    settings.METRICS_TOKEN = ""
    answer = requests.get(f"{served}/metrics", timeout=10)
    assert answer.status_code == 200
    assert Samples.parse(answer.text).has("pbxscreen_operator_sockets")
    proxied = requests.get(f"{served}/metrics", headers={"X-Forwarded-For": "1.2.3.4"}, timeout=10)
    assert proxied.status_code == 403


@pytest.mark.parametrize("port", ["0", "-1", "65536", "99999"])
def test_pbx_listen_refuses_a_bad_metrics_port(port: str) -> None:
    with pytest.raises(CommandError, match="metrics-port"):
        call_command("pbx_listen", "--metrics-port", port)


def test_pbx_listen_says_when_the_metrics_port_is_taken(settings: Any) -> None:
    settings.PBX_BASE_URL = "http://127.0.0.1:1"
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    taken = metrics.serve_in_thread(free_port())
    try:
        with pytest.raises(CommandError, match="cannot listen"):
            call_command("pbx_listen", "--metrics-port", str(taken.server_address[1]))
    finally:
        taken.shutdown()
        taken.server_close()
