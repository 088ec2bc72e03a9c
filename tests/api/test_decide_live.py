"""Deciding through the API against a real `manage.py serve` and the PBX simulator: the same
claim as the dashboard's buttons, raced against them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from screening.api import tokens
from screening.models import AuditEvent, AuditKind
from tests.conftest import Live
from tests.support.calls import arrived, pbx_requests
from tests.support.live import make_user, session_for

pytestmark = pytest.mark.live

DECISIONS = ("call/accept_inbound", "call/refuse_inbound")


def token_session(user: Any, name: str) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Token {tokens.issue(user, name).key}"
    return http


def test_twenty_parallel_api_and_dashboard_decisions_one_pbx_request(live: Live) -> None:
    """Ten operators press a dashboard button, ten scripts call the API, all at once, half of
    each accepting and half refusing: one wins, the PBX is asked once, the others get 409."""
    users = [make_user(f"op{i}", first_name=f"Op{i}") for i in range(20)]
    callers: list[tuple[str, requests.Session]] = []
    for i, user in enumerate(users):
        if i % 2:
            callers.append(("api", token_session(user, f"CRM sync {i}")))
        else:
            callers.append(("dashboard", session_for(live.server, user)))
    sent = live.sim.inject("07700900111", "02079460000", "peer-to-41")
    call = arrived(sent)
    barrier = threading.Barrier(len(callers))

    def press(index: int) -> tuple[str, requests.Response]:
        way, http = callers[index]
        action = ("accept", "refuse")[(index // 2) % 2]
        url = f"/api/v1/calls/{call.pk}/{action}" if way == "api" else f"/calls/{call.pk}/{action}"
        barrier.wait()
        return way, http.post(live.url + url, timeout=30)

    with ThreadPoolExecutor(len(callers)) as pool:
        answers = list(pool.map(press, range(len(callers))))

    codes = [(way, a.status_code) for way, a in answers]
    assert [c for _, c in codes].count(200) == 1, codes
    assert [c for _, c in codes].count(409) == 19, codes
    way, winner = next((w, a) for w, a in answers if a.status_code == 200)
    body = winner.json()
    assert body["ok"] is True
    assert body["status"] in {"accepted", "refused"}
    # The same body either way; a loser names the winner, as on the dashboard.
    assert all(body["decided_by"] in a.json()["error"] for _, a in answers if a.status_code == 409)
    asked = [e for endpoint in DECISIONS for e in pbx_requests(live, endpoint, sent["channel_id"])]
    assert len(asked) == 1, asked
    claimed = AuditEvent.objects.get(call=call, kind=AuditKind.CLAIMED)
    if way == "api":
        assert "via API token 'CRM sync" in claimed.message
        assert claimed.detail["via"].startswith("API token 'CRM sync")
    else:
        assert "via" not in claimed.message


def test_an_api_refusal_with_a_reason_and_a_session_decision_via_api(live: Live) -> None:
    alice = make_user("alice", first_name="Alice")
    http = token_session(alice, "CRM sync")
    sent = live.sim.inject("+442079460123", "02079460001", "register-bt")
    call = arrived(sent)
    bad = http.post(f"{live.url}/api/v1/calls/{call.pk}/refuse", json={"reason": "bored"})
    assert bad.status_code == 400  # nothing claimed: the call is still waiting
    answer = http.post(
        f"{live.url}/api/v1/calls/{call.pk}/refuse", json={"reason": "spam", "note": "robot"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "refused"
    assert answer.json()["call"]["reason"] == "spam"
    assert live.sim.call(sent["call_id"])["outcome"] == "refused"
    claimed = AuditEvent.objects.get(call=call, kind=AuditKind.CLAIMED)
    assert claimed.message == "Alice decided to refuse via API token 'CRM sync'"
    # Its timeline, as a supervisor's script reads it.
    sam = token_session(make_user("sam", group="Supervisors"), "reports")
    detail = sam.get(f"{live.url}/api/v1/calls/{call.pk}/", timeout=10)
    assert detail.status_code == 200, detail.text
    steps = detail.json()["timeline"]
    kinds = [step["kind"] for step in steps]
    assert kinds[0] == "received"
    assert {"claimed", "pbx_request", "pbx_response", "refused", "reason"} <= set(kinds)
    claimed_step = next(step for step in steps if step["kind"] == "claimed")
    assert claimed_step["detail"]["via"] == "API token 'CRM sync'"
    assert claimed_step["actor"] == "Alice"
    assert detail.json()["reason"] == "spam"
    # The browser's session through the API: "via API".
    browser = session_for(live.server, make_user("bob", first_name="Bob"))
    sent = live.sim.inject("+442079460124", "02079460001", "register-bt")
    call = arrived(sent)
    answer = browser.post(f"{live.url}/api/v1/calls/{call.pk}/accept")
    assert answer.status_code == 200, answer.text
    claimed = AuditEvent.objects.get(call=call, kind=AuditKind.CLAIMED)
    assert claimed.message == "Bob decided to accept via API"
    # Too late: the call is decided; the API answers what the dashboard answers.
    again = browser.post(f"{live.url}/api/v1/calls/{call.pk}/refuse")
    dashboard = browser.post(f"{live.url}/calls/{call.pk}/refuse")
    assert again.status_code == dashboard.status_code == 409
    assert again.json()["error"] == dashboard.json()["error"]
