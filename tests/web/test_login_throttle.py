"""The login throttle, in process: every spelling of one account shares its counter, the
per-address limit across usernames, the bound on password checks at once, and a cache that cannot
be reached. Both login forms (the site's and the admin's) are walked. The same limits against a
real server with parallel requests: tests/e2e/test_login_throttle_live.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, override_settings

from screening import throttle
from tests.support.cluster import new_redis
from tests.support.live import free_port, make_user, wait_for

LOGIN_PATHS = ("/login/", "/admin/login/")
RIGHT = "right-horse-battery"
MISMATCH = b"didn't match"

# (the account's username, spellings Django's login maps to that same account). Escapes, so that
# the source shows which character each one is: FULLWIDTH (U+FF..), LIGATURE (U+FB0x),
# SUPERSCRIPT, MODIFIER LETTER, COMBINING ACUTE ACCENT, and Unicode spaces the form strips.
SPELLINGS = [
    (
        "op03",
        [
            "\uff4fp03",  # fullwidth o: the reported bypass
            "\uff4f\uff50\uff10\uff13",  # all fullwidth
            " op03 ",
            "op03\u3000",  # ideographic space
            "\u2003op03",  # em space
            "op\u2070\u00b3",  # superscript 0 and 3
            "\u1d52p03",  # modifier letter small o
        ],
    ),
    ("office", ["o\ufb03ce", "o\ufb00ice", "\uff4f\ufb03\uff43\uff45"]),  # ffi, ff ligatures
    # "jos\u00e9" is stored precomposed; typed with a combining accent it is the same account
    ("jos\u00e9", ["jose\u0301", "\uff4aose\u0301", " jos\u00e9"]),
    ("ghost", ["\uff47host", " ghost", "\uff47\uff48\uff4f\uff53\uff54"]),  # no such user
]


@pytest.fixture(params=LOGIN_PATHS)
def login_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def post(path: str, username: str, password: str, addr: str = "10.0.0.1") -> Any:
    return Client().post(path, {"username": username, "password": password}, REMOTE_ADDR=addr)


def staff(username: str) -> Any:
    # Staff, so that the right password logs in on the admin's form as on the site's.
    return make_user(username, password=RIGHT, is_staff=True)


@pytest.mark.django_db
@pytest.mark.parametrize(("account", "spellings"), SPELLINGS, ids=[s[0] for s in SPELLINGS])
@override_settings(LOGIN_FAILURE_LIMIT=3, LOGIN_LOCKOUT_SECONDS=120)
def test_every_spelling_of_one_account_shares_one_counter(
    login_path: str, account: str, spellings: list[str]
) -> None:
    if account != "ghost":
        staff(account)
        # Each spelling really reaches the account: Django logs it in with the right password.
        for spelling in spellings:
            assert post(login_path, spelling, RIGHT, addr="10.9.9.9").status_code == 302, spelling
    # Wrong passwords spread over the spellings: the third one, whichever spelling, locks.
    answers = [post(login_path, spellings[i % len(spellings)], "wrong") for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert MISMATCH in answers[2].content  # the last check's answer, and the lock
    assert b"Too many failed logins" in answers[2].content
    # Now every spelling is refused, even with the right password, on both forms.
    for spelling in [account, *spellings]:
        for path in LOGIN_PATHS:
            refused = post(path, spelling, RIGHT)
            assert refused.status_code == 429, (spelling, path)
            assert MISMATCH not in refused.content  # refused unchecked


@pytest.mark.django_db
@override_settings(LOGIN_FAILURE_LIMIT=3, LOGIN_LOCKOUT_SECONDS=120)
def test_a_case_variant_is_another_account_and_the_lock_follows_the_user_id(
    login_path: str,
) -> None:
    user = staff("op07")
    # Usernames are compared exactly (as ModelBackend and the databases here do): "OP07" never
    # reaches op07, so its own counter cannot help anyone guess op07's password.
    assert post(login_path, "OP07", RIGHT).status_code == 200
    for _ in range(2):
        assert post(login_path, "op07", "wrong").status_code == 200
    assert post(login_path, "op07", "wrong").status_code == 429
    # Renamed, the account is the same user: still locked under its new name.
    user.username = "op07-renamed"
    user.save()
    assert post(login_path, "op07-renamed", RIGHT).status_code == 429
    assert post(login_path, "op07-renamed", RIGHT, addr="10.0.0.2").status_code == 302


@pytest.mark.django_db
@override_settings(LOGIN_FAILURE_LIMIT=5, LOGIN_ADDRESS_FAILURE_LIMIT=4, LOGIN_LOCKOUT_SECONDS=60)
def test_many_usernames_from_one_address_hit_the_address_limit(login_path: str) -> None:
    staff("real")
    codes = [post(login_path, f"guess{i}", "wrong", addr="10.1.1.1").status_code for i in range(4)]
    assert codes == [200, 200, 200, 429]
    locked = post(login_path, "guess-new", "wrong", addr="10.1.1.1")
    assert locked.status_code == 429
    assert b"Too many failed logins from your address" in locked.content
    assert locked["Retry-After"] in {"59", "60"}
    # Even a real account with its right password waits; other addresses do not.
    other = "/login/" if login_path != "/login/" else "/admin/login/"
    assert post(other, "real", RIGHT, addr="10.1.1.1").status_code == 429
    assert post(login_path, "real", RIGHT, addr="10.1.1.2").status_code == 302


# Usernames no account can have, as a form body carries them (percent-encoded): a NUL (the form
# refuses it; PostgreSQL would refuse it in a query), one past the column, bytes that are not
# UTF-8, control characters.
IMPOSSIBLE_USERNAMES = {
    "NUL": "op%00x",
    "NUL only": "%00",
    "past the column": "x" * 151,
    "not UTF-8": "%ED%A0%80op",
    "control characters": "op%1B%5B31m%7F",
}


@pytest.mark.django_db
@override_settings(LOGIN_FAILURE_LIMIT=5, LOGIN_ADDRESS_FAILURE_LIMIT=4, LOGIN_LOCKOUT_SECONDS=60)
def test_impossible_usernames_are_answered_and_counted_never_a_500(
    login_path: str,
) -> None:
    client = Client(raise_request_exception=False)
    codes = []
    for username in IMPOSSIBLE_USERNAMES.values():
        body = f"username={username}&password=wrong"
        response = client.post(
            login_path, body, "application/x-www-form-urlencoded", REMOTE_ADDR="10.2.2.2"
        )
        codes.append(response.status_code)
    # The form comes back for each, and each counts against the address.
    assert codes == [200, 200, 200, 429, 429]


@pytest.mark.django_db
@override_settings(LOGIN_ADDRESS_FAILURE_LIMIT=3, LOGIN_LOCKOUT_SECONDS=60)
def test_successful_logins_from_one_address_do_not_count_against_it(login_path: str) -> None:
    # An office behind one NAT address: many people log in every morning.
    for i in range(6):
        staff(f"clerk{i}")
        assert post(login_path, f"clerk{i}", RIGHT, addr="10.2.2.2").status_code == 302
    assert post(login_path, "clerk0", "typo", addr="10.2.2.2").status_code == 200


@pytest.mark.django_db(transaction=True)
@override_settings(LOGIN_FAILURE_LIMIT=2, LOGIN_CONCURRENT_CHECKS=1, LOGIN_CHECK_QUEUE=1)
def test_password_checks_beyond_the_gate_and_its_queue_are_refused_unhashed(
    login_path: str,
) -> None:
    staff("busy")
    gate = throttle.checks
    answers: list[Any] = []
    with gate.admit(1, 1, 1.0) as admitted:  # one check is running: the gate is full
        assert admitted
        queued = threading.Thread(target=lambda: answers.append(post(login_path, "busy", "wrong")))
        queued.start()
        wait_for(lambda: gate.waiting == 1, what="a login waiting for its check")
        # The queue is full as well: answered at once, without a password check.
        turned_away = post(login_path, "busy", RIGHT)
        assert turned_away.status_code == 503
        assert b"busy with other logins" in turned_away.content
        assert MISMATCH not in turned_away.content
        assert turned_away["Retry-After"].isdigit()
    queued.join(timeout=30)
    assert [a.status_code for a in answers] == [200]  # it waited its turn and was checked
    # Turned away unchecked, it did not count: the next wrong password is checked, and being the
    # second (limit 2), it locks.
    locking = post(login_path, "busy", "wrong")
    assert locking.status_code == 429
    assert MISMATCH in locking.content
    assert post(login_path, "busy", RIGHT, addr="10.3.3.3").status_code == 302


def _redis_cache(url: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }


@pytest.mark.django_db
def test_an_unreachable_cache_refuses_logins_with_503_not_500() -> None:
    staff("nocache")
    with override_settings(CACHES=_redis_cache(f"redis://127.0.0.1:{free_port()}/0")):
        for path in LOGIN_PATHS:
            assert Client().get(path).status_code == 200  # the form still shows
            for password in ("wrong", RIGHT):  # fail closed: not even the right password
                answer = Client(raise_request_exception=False).post(
                    path, {"username": "nocache", "password": password}
                )
                assert answer.status_code == 503, (path, answer.status_code)
                assert b"Try again shortly" in answer.content
                assert answer["Retry-After"].isdigit()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    server = new_redis(tmp_path)  # never stop the shared Redis
    yield server
    server.kill()


@pytest.mark.django_db
@override_settings(LOGIN_FAILURE_LIMIT=2)
def test_a_lockout_holds_while_redis_is_down_and_logins_resume_after(private_redis: Any) -> None:
    staff("locked")
    with override_settings(CACHES=_redis_cache(private_redis.url)):
        assert post("/login/", "locked", "wrong").status_code == 200
        assert post("/login/", "locked", "wrong").status_code == 429
        private_redis.kill()
        down = Client(raise_request_exception=False)
        answer = down.post("/login/", {"username": "locked", "password": RIGHT})
        assert answer.status_code == 503  # never let through while the lock cannot be read
        private_redis.start()
        # Redis came back empty (a cache): the count starts again.
        assert post("/login/", "locked", RIGHT).status_code == 302


def test_the_username_is_normalised_exactly_as_the_login_form_does() -> None:
    from django.contrib.auth.forms import AuthenticationForm

    username_field = AuthenticationForm().fields["username"]
    for _account, spellings in SPELLINGS:
        for spelling in spellings:
            assert throttle.normalized_username(spelling) == username_field.clean(spelling)
    too_long = "x" * (get_user_model()._meta.get_field("username").max_length + 1)
    assert throttle.normalized_username(f" {too_long} ") == too_long  # the form lets it through
    assert throttle.normalized_username("op\x0003") is None  # refused by the form
