"""The login throttle against a real Daphne server under parallel requests: the limits hold
whatever the timing (each attempt reserves its place before its password is checked), and a login
flood is turned away without hashing while operators keep deciding calls.

A password check is observable from outside: its answer carries the form's error (with 200, or
with 429 when it was the check that reached the limit); a refusal never does.
Whatever cache the environment gives the server is used: the local-memory cache in the embedded
setup, Redis when REDIS_URL is set."""

from __future__ import annotations

import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from screening.models import Call
from tests.conftest import LiveFactory
from tests.support.live import make_user, session_for, wait_for

pytestmark = pytest.mark.live

CSRF = "throttlecsrftokenthrottlecsrf012"  # 32 characters: Django accepts an unmasked secret
# The site's form says the first, the admin's the second, and a 429 that ends a check the first.
CHECKED = ("didn't match", "Please enter the correct username and password")
LOGIN_PATHS = ("/login/", "/admin/login/")


def attempt(url: str, path: str, username: str, password: str, address: str) -> tuple[int, str]:
    """One login POST as a browser at ``address`` sends it (through a proxy: X-Forwarded-For)."""
    answer = requests.post(
        f"{url}{path}",
        data={"username": username, "password": password, "csrfmiddlewaretoken": CSRF},
        cookies={"csrftoken": CSRF},
        headers={"X-Forwarded-For": address},
        allow_redirects=False,
        timeout=60,
    )
    return answer.status_code, answer.text


def all_at_once(url: str, tries: list[tuple[str, str, str, str]]) -> list[tuple[int, str]]:
    barrier = threading.Barrier(len(tries))

    def one(args: tuple[str, str, str, str]) -> tuple[int, str]:
        barrier.wait()
        return attempt(url, *args)

    with ThreadPoolExecutor(len(tries)) as pool:
        return list(pool.map(one, tries))


def checked(answers: list[tuple[int, str]]) -> int:
    return sum(was_checked(text) for _, text in answers)


def was_checked(text: str) -> bool:
    return any(marker in text for marker in CHECKED)


def test_fifty_parallel_wrong_passwords_for_one_account_get_five_checks(
    live_factory: LiveFactory,
) -> None:
    # A queue long enough that no attempt is turned away for being busy: only the throttle acts.
    live = live_factory(PROXY_HEADERS="true", LOGIN_CHECK_QUEUE="60")
    make_user("victim", password="right-horse-battery", is_staff=True)
    spellings = ["victim", "\uff56ictim", " victim ", "vic\uff54im"]  # one account, four ways
    tries = [
        (LOGIN_PATHS[i % 2], spellings[i % len(spellings)], f"wrong{i}", "10.5.0.1")
        for i in range(50)
    ]
    answers = all_at_once(live.url, tries)
    codes = [code for code, _ in answers]
    assert set(codes) <= {200, 429}, codes
    assert checked(answers) == 5, codes  # LOGIN_FAILURE_LIMIT, not one more
    assert codes.count(429) == 46, codes  # 45 refused unchecked, and the fifth check
    # Locked: even the right password, on either form, in any spelling.
    for path in LOGIN_PATHS:
        code, text = attempt(live.url, path, "\uff56ictim", "right-horse-battery", "10.5.0.1")
        assert code == 429
        assert not was_checked(text)
    # From elsewhere the real user still gets in.
    assert attempt(live.url, "/login/", "victim", "right-horse-battery", "10.5.0.2")[0] == 302


def test_fifty_parallel_usernames_from_one_address_get_the_address_limits_checks(
    live_factory: LiveFactory,
) -> None:
    live = live_factory(
        PROXY_HEADERS="true", LOGIN_ADDRESS_FAILURE_LIMIT="10", LOGIN_CHECK_QUEUE="60"
    )
    make_user("real", password="right-horse-battery")
    tries = [
        (LOGIN_PATHS[i % 2], f"guess-{uuid.uuid4().hex[:8]}", "wrong", "10.7.0.1")
        for i in range(50)
    ]
    answers = all_at_once(live.url, tries)
    codes = [code for code, _ in answers]
    assert set(codes) <= {200, 429}, codes
    assert checked(answers) == 10, codes
    refused = [text for code, text in answers if code == 429 and not was_checked(text)]
    assert refused
    assert all("from your address" in text for text in refused)
    assert attempt(live.url, "/login/", "real", "right-horse-battery", "10.7.0.1")[0] == 429
    assert attempt(live.url, "/login/", "real", "right-horse-battery", "10.7.0.2")[0] == 302


def test_operators_keep_deciding_while_a_login_flood_is_turned_away(
    live_factory: LiveFactory,
) -> None:
    # Defaults: one password check at a time, eight waiting. The flood comes from many addresses,
    # so that no address limit stops it: only the bound on checks protects the decisions.
    live = live_factory(PROXY_HEADERS="true")
    operator = session_for(live.server, make_user("op", first_name="Op"))
    stop = threading.Event()
    flood: list[int] = []

    def flooder(worker: int) -> None:
        rng = random.Random(worker)
        while not stop.is_set():
            address = f"10.{worker}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            name = f"nobody-{rng.getrandbits(40):x}"
            code, _ = attempt(live.url, LOGIN_PATHS[worker % 2], name, "wrong", address)
            flood.append(code)

    decisions: list[Any] = []
    with ThreadPoolExecutor(20) as pool:
        workers = [pool.submit(flooder, w) for w in range(20)]
        try:
            wait_for(lambda: 503 in flood, timeout=30, what="the flood to fill the check queue")
            for i in range(5):
                sent = live.sim.inject(f"0770090{i:04d}", "02079460000", "peer-to-41")
                call = wait_for(
                    lambda sent=sent: Call.objects.filter(pbx_call_id=sent["call_id"]).first(),
                    what="the call to arrive during the flood",
                )
                answer = operator.post(f"{live.url}/calls/{call.pk}/accept", timeout=10)
                decisions.append((answer.status_code, answer.json().get("status")))
        finally:
            stop.set()
            for worker in workers:
                worker.result()
    assert decisions == [(200, "accepted")] * 5, decisions
    # Every flood answer was a check (200) or turned away unhashed (503): never an error.
    assert set(flood) <= {200, 503}, sorted(set(flood))
    assert flood.count(503) > flood.count(200)
