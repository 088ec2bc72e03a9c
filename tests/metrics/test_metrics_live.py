"""/metrics of a real `manage.py serve` process, scraped over HTTP while the PBX simulator offers
calls and operators decide them: the numbers a monitoring system would see."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.conftest import LiveFactory
from tests.metrics.scrape import TOKEN, Samples, scrape
from tests.support.calls import arrived
from tests.support.live import make_user, session_for, wait_for
from tests.support.sockets import OperatorSocket

pytestmark = pytest.mark.live

TRUNK = "peer-to-41"


def scraped_until(url: str, check: Any, what: str) -> Samples:
    """Scrape until ``check(samples)`` holds: counts move once the change has committed."""
    found: list[Samples] = []

    def ready() -> bool:
        found[:] = [scrape(url)]
        return bool(check(found[0]))

    wait_for(ready, timeout=15, interval=0.1, what=what)
    return found[0]


def ended(samples: Samples, outcome: str, **labels: str) -> float:
    return samples.get("pbxscreen_calls_ended_total", outcome=outcome, **labels)


def test_calls_are_counted_received_and_ended_by_outcome_as_operators_decide(
    live_factory: LiveFactory,
) -> None:
    live = live_factory(METRICS_TOKEN=TOKEN)
    before = scrape(live.url)
    assert before.get("pbxscreen_pbx_link_up") == 1
    assert before.get("pbxscreen_pbx_link_state", state="up") == 1
    assert before.get("pbxscreen_pbx_tokens_issued_total", endpoint="get_token") >= 1
    http = session_for(live.server, make_user("alice"))

    # Accepted by an operator: received, ended accepted by an operator, one decision timed.
    sent = live.sim.inject("07700900111", "02079460000", TRUNK)
    call = arrived(sent)
    assert http.post(f"{live.url}/calls/{call.pk}/accept", timeout=10).status_code == 200
    after = scraped_until(
        live.url, lambda s: ended(s, "accepted") == 1, "the accepted call to be counted"
    )
    received = "pbxscreen_calls_received_total"
    assert after.get(received, trunk=TRUNK) - before.get(received, trunk=TRUNK) == 1
    assert ended(after, "accepted", decided_by="operator", trunk=TRUNK) == 1
    decisions = after.get("pbxscreen_decision_seconds_count")
    assert decisions - before.get("pbxscreen_decision_seconds_count") == 1
    # Claimed within the window: the observation sits in a bucket at or below its end.
    assert 0 <= after.get("pbxscreen_decision_seconds_sum") <= live.window
    assert after.get("pbxscreen_decision_seconds_bucket", le="+Inf") == decisions
    latency = "pbxscreen_pbx_request_seconds_count"
    assert after.get(latency, endpoint="call/accept_inbound") == 1
    assert after.get("pbxscreen_pbx_request_seconds_sum", endpoint="call/accept_inbound") > 0
    assert after.get("pbxscreen_push_fanout_seconds_count", kind="call") >= 1

    # Refused by an operator.
    sent = live.sim.inject("07700900222", "02079460000", TRUNK)
    call = arrived(sent)
    assert http.post(f"{live.url}/calls/{call.pk}/refuse", timeout=10).status_code == 200
    after = scraped_until(
        live.url, lambda s: ended(s, "refused") == 1, "the refused call to be counted"
    )
    assert ended(after, "refused", decided_by="operator", trunk=TRUNK) == 1
    assert after.get("pbxscreen_decision_seconds_count") == decisions + 1

    # Nobody decides: the PBX routes it itself at the end of the window.
    sent = live.sim.inject("07700900333", "02079460000", TRUNK)
    arrived(sent)
    after = scraped_until(
        live.url, lambda s: ended(s, "expired") == 1, "the expired call to be counted"
    )
    assert ended(after, "expired", decided_by="pbx_timeout", trunk=TRUNK) == 1
    assert after.get(received, trunk=TRUNK) - before.get(received, trunk=TRUNK) == 3
    assert after.get("pbxscreen_calls_ended_total") == 3
    assert after.get("pbxscreen_decision_seconds_count") == decisions + 1  # no claim: no timing


def test_a_failed_decision_counts_the_pbx_errcode_and_the_failure(
    live_factory: LiveFactory,
) -> None:
    live = live_factory(METRICS_TOKEN=TOKEN)
    http = session_for(live.server, make_user("carol"))
    sent = live.sim.inject("07700900555", "02079460000", TRUNK)
    call = arrived(sent)
    live.sim.set_faults(error_rate=1.0)
    assert http.post(f"{live.url}/calls/{call.pk}/accept", timeout=10).status_code == 502
    live.sim.set_faults(error_rate=0.0)
    after = scraped_until(live.url, lambda s: ended(s, "failed") == 1, "the failure to count")
    assert ended(after, "failed", decided_by="operator", trunk=TRUNK) == 1
    errors = "pbxscreen_pbx_errors_total"
    assert after.get(errors, endpoint="call/accept_inbound", errcode="-2") == 1
    assert after.get("pbxscreen_pbx_request_seconds_count", endpoint="call/accept_inbound") == 1


def test_the_sockets_gauge_follows_operators_and_metrics_need_the_token(
    live_factory: LiveFactory,
) -> None:
    live = live_factory(METRICS_TOKEN=TOKEN)
    sockets = "pbxscreen_operator_sockets"
    assert scrape(live.url).get(sockets) == 0
    with OperatorSocket(live, make_user("dave")), OperatorSocket(live, make_user("erin")):
        scraped_until(live.url, lambda s: s.get(sockets) == 2, "two sockets counted")
    scraped_until(live.url, lambda s: s.get(sockets) == 0, "both sockets to be uncounted")
    # A socket refused to a user who may not decide calls is never counted.
    refused = OperatorSocket(live, make_user("sam", group="Supervisors"))
    with pytest.raises(AssertionError, match="socket closed"):
        refused.__enter__()
    refused.__exit__()
    assert scrape(live.url).get(sockets) == 0

    # Over real HTTP: without the token, with a wrong one, with another scheme.
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-0123456789abcdef"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ):
        answer = requests.get(f"{live.url}/metrics", headers=headers, timeout=10)
        assert answer.status_code == 401, headers
        assert answer.headers["Content-Type"].startswith("text/plain")
        assert "pbxscreen_" not in answer.text
