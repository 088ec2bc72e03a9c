"""Who may open what: every page and endpoint for anonymous users, operators (decide_call only)
and supervisors (view_audit only)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.test import Client

from screening import authcache
from screening.models import Call
from tests.support.live import make_user
from tests.support.reporting import build_history

pytestmark = pytest.mark.django_db

ANONYMOUS, OPERATOR, SUPERVISOR = "anonymous", "operator", "supervisor"
LOGIN = "login"  # a redirect to the login page

# url template -> expected status per role
PAGES = {
    "/": {ANONYMOUS: LOGIN, OPERATOR: 200, SUPERVISOR: 403},
    "/audit/": {ANONYMOUS: LOGIN, OPERATOR: 403, SUPERVISOR: 200},
    "/audit/?outcome=expired&sort=caller": {ANONYMOUS: LOGIN, OPERATOR: 403, SUPERVISOR: 200},
    "/audit/{pk}/": {ANONYMOUS: LOGIN, OPERATOR: 403, SUPERVISOR: 200},
    "/audit/export.csv": {ANONYMOUS: LOGIN, OPERATOR: 403, SUPERVISOR: 200},
    "/stats/": {ANONYMOUS: LOGIN, OPERATOR: 403, SUPERVISOR: 200},
    "/stats/?month=2026-03&by=hour": {ANONYMOUS: LOGIN, OPERATOR: 403, SUPERVISOR: 200},
    "/supervisor/": {ANONYMOUS: LOGIN, OPERATOR: 403, SUPERVISOR: 200},
    # JSON endpoints answer JSON, never a login page
    "/supervisor/state.json": {ANONYMOUS: 401, OPERATOR: 403, SUPERVISOR: 200},
}


def client_for(role: str) -> Client:
    client = Client()
    if role == OPERATOR:
        client.force_login(make_user("olga", group="Operators"))
    elif role == SUPERVISOR:
        client.force_login(make_user("sam", group="Supervisors"))
    return client


@pytest.mark.parametrize("role", [ANONYMOUS, OPERATOR, SUPERVISOR])
def test_every_page_for_every_role(role: str) -> None:
    history = build_history()
    client = client_for(role)
    for template, expected in PAGES.items():
        url = template.format(pk=history.calls[0].pk)
        response = client.get(url)
        want = expected[role]
        if want == LOGIN:
            assert response.status_code == 302, url
            assert response["Location"].startswith("/login/?next="), url
        else:
            assert response.status_code == want, f"{role} {url}: {response.status_code}"
        if url.endswith(".json"):
            assert response["Content-Type"] == "application/json", url


# The decide view reads the session in a worker thread (its own database connection), so the
# session must be committed.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("role", "status"), [(ANONYMOUS, 401), (SUPERVISOR, 403)])
@pytest.mark.parametrize("action", ["accept", "refuse"])
def test_only_operators_may_decide(role: str, status: int, action: str) -> None:
    call = build_history().calls[0]
    response = client_for(role).post(f"/calls/{call.pk}/{action}")
    assert response.status_code == status
    assert response.json()["ok"] is False
    assert Call.objects.get(pk=call.pk).status == call.status  # untouched


def test_reports_are_read_only() -> None:
    call = build_history().calls[0]
    client = client_for(SUPERVISOR)
    for url in ("/audit/", f"/audit/{call.pk}/", "/audit/export.csv", "/stats/", "/supervisor/"):
        assert client.post(url).status_code == 405, url


def test_the_navigation_shows_what_each_role_may_open() -> None:
    supervisor = client_for(SUPERVISOR).get("/audit/").content.decode()
    assert 'href="/audit/"' in supervisor
    assert 'href="/stats/"' in supervisor
    assert 'href="/supervisor/"' in supervisor
    assert ">Live calls<" not in supervisor
    operator = client_for(OPERATOR).get("/").content.decode()
    assert 'href="/audit/"' not in operator
    assert ">Live calls<" in operator


# The signed-in user and their permissions are kept per process (screening/authcache.py): every
# change of access must still apply to the very next request.
@pytest.mark.django_db(transaction=True)
def test_a_change_of_access_applies_to_the_next_decision() -> None:
    call = build_history().calls[0]
    operator = make_user("olga", group="Operators")
    client = Client()
    client.force_login(operator)
    url = f"/calls/{call.pk}/accept"
    assert client.post(url).status_code not in (401, 403)  # allowed (the call is long decided)
    operators = Group.objects.get(name="Operators")
    decide = Permission.objects.get(codename="decide_call")
    operators.permissions.remove(decide)
    assert client.post(url).status_code == 403
    operators.permissions.add(decide)
    assert client.post(url).status_code not in (401, 403)
    operator.groups.clear()
    assert client.post(url).status_code == 403
    operator.groups.add(operators)
    assert client.post(url).status_code not in (401, 403)
    operator.is_active = False
    operator.save()
    assert client.post(url).status_code == 401
    operator.is_active = True
    operator.set_password("a new one")
    operator.save()
    assert client.post(url).status_code == 401  # a new password ends the other sessions


# The shared cache forgetting a user's generation (evicted under memory pressure, a new cache)
# must not make what a process kept before a change look current again.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("lost", ["generation", "epoch", "both"])
def test_a_lost_generation_never_brings_back_revoked_access(lost: str) -> None:
    call = build_history().calls[0]
    operator = make_user("olga", group="Operators")
    cache.delete_many([authcache.EPOCH_KEY, authcache._key(operator.pk)])  # never bumped yet
    client = Client()
    client.force_login(operator)
    url = f"/calls/{call.pk}/accept"
    assert client.post(url).status_code not in (401, 403)  # kept by this process
    kept = authcache._entries[operator.pk].version
    operator.groups.clear()  # the signal replaces the generation ...
    lose = {"generation": [authcache._key(operator.pk)], "epoch": [authcache.EPOCH_KEY]}
    cache.delete_many(lose.get(lost) or [k for keys in lose.values() for k in keys])  # ... lost
    assert client.post(url).status_code == 403
    assert authcache._entries[operator.pk].version != kept


# With the shared cache unreachable (a Redis outage), requests read the user from the database:
# still allowed, still revoked at once, never a 500.
@pytest.mark.django_db(transaction=True)
def test_with_the_shared_cache_down_access_is_read_from_the_database(settings: Any) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on: every cache call is refused
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    call = build_history().calls[0]
    operator = make_user("olga", group="Operators")
    client = Client()
    client.force_login(operator)
    url = f"/calls/{call.pk}/accept"
    assert client.post(url).status_code not in (401, 403, 500)  # kept while the cache is up
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{dead}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    assert client.post(url).status_code not in (401, 403, 500)
    Group.objects.get(name="Operators").permissions.remove(
        Permission.objects.get(codename="decide_call")
    )  # the generation cannot be replaced: the database says no at once
    assert client.post(url).status_code == 403
