"""Personal API tokens: made by the command (key printed once, only its hash kept), used with
exactly the user's roles, ended by revoking them in admin or deactivating the user."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from screening.models import ApiToken
from tests.support.live import make_user


def create(username: str, name: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_token", username, "--name", name, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def get(key: str, url: str = "/api/v1/stats/") -> int:
    return Client().get(url, HTTP_AUTHORIZATION=f"Token {key}").status_code


@pytest.mark.django_db
def test_the_command_prints_the_key_once_and_keeps_only_its_hash() -> None:
    make_user("sam", group="Supervisors")
    key, told = create("sam", "CRM sync")
    assert key.startswith("pbxs_")
    assert len(key) > 40
    assert "only time the key is shown" in told
    token = ApiToken.objects.get()
    assert token.name == "CRM sync"
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key.startswith(token.prefix)
    assert len(token.prefix) < len(key) // 2
    stored = [str(v) for v in ApiToken.objects.values().get().values()]
    assert key not in stored
    assert get(key) == 200


@pytest.mark.django_db
def test_the_command_refuses_an_unknown_user_and_a_duplicate_live_name() -> None:
    make_user("sam", group="Supervisors")
    with pytest.raises(CommandError, match="No user 'nobody'"):
        create("nobody", "CRM sync")
    create("sam", "CRM sync")
    with pytest.raises(CommandError, match="already has a live token named 'CRM sync'"):
        create("sam", "CRM sync")
    with pytest.raises(CommandError, match="name"):
        create("sam", "   ")
    # Once revoked, the name is free again.
    ApiToken.objects.update(revoked_at=timezone.now())
    create("sam", "CRM sync")
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 1


def test_the_command_exits_non_zero_on_error(transactional_db: None) -> None:
    import subprocess
    import sys

    from django.conf import settings

    from tests.support.live import database_url

    done = subprocess.run(
        [sys.executable, "manage.py", "create_api_token", "nobody", "--name", "x"],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "DATABASE_URL": database_url()},
        timeout=60,
    )
    assert done.returncode != 0
    assert "No user 'nobody'" in done.stderr
    assert done.stdout == ""


@pytest.mark.django_db
def test_a_revoked_token_and_an_inactive_user_get_401() -> None:
    sam = make_user("sam", group="Supervisors")
    key, _ = create("sam", "CRM sync")
    assert get(key) == 200
    ApiToken.objects.update(revoked_at=timezone.now())
    assert get(key) == 401
    key, _ = create("sam", "CRM sync 2")
    sam.is_active = False
    sam.save()
    answer = Client().get("/api/v1/stats/", HTTP_AUTHORIZATION=f"Token {key}")
    assert answer.status_code == 401
    assert answer.json() == {"detail": "This token's user is inactive."}


@pytest.mark.django_db
def test_malformed_and_forged_headers_are_401_never_500() -> None:
    make_user("sam", group="Supervisors")
    key, _ = create("sam", "CRM sync")
    for header in (
        "Token",
        "Token ",
        f"Token {key} extra",
        f"Token {key[:-1]}",
        f"Token {key}x",
        "Token " + "a" * 10_000,
        "Token \u00e9\u00e9\u00e9",
        "Token pbxs_\x00",
        "token " + key[:10],
    ):
        answer = Client().get("/api/v1/stats/", HTTP_AUTHORIZATION=header)
        assert answer.status_code == 401, header[:40]
        assert answer["WWW-Authenticate"] == 'Token realm="api"'
    # Another scheme is not ours: the request is simply anonymous.
    assert get("x", "/api/v1/stats/") == 401
    assert Client().get("/api/v1/stats/", HTTP_AUTHORIZATION="Bearer x").status_code == 401
    # The key's scheme is case-insensitive, as HTTP's are.
    assert Client().get("/api/v1/stats/", HTTP_AUTHORIZATION=f"token {key}").status_code == 200


@pytest.mark.django_db
def test_last_used_is_written_at_most_once_a_minute() -> None:
    make_user("sam", group="Supervisors")
    key, _ = create("sam", "CRM sync")
    assert ApiToken.objects.get().last_used_at is None
    get(key)
    first = ApiToken.objects.get().last_used_at
    assert first is not None
    get(key)
    assert ApiToken.objects.get().last_used_at == first
    ApiToken.objects.update(last_used_at=first - timedelta(minutes=2))
    get(key)
    assert ApiToken.objects.get().last_used_at > first


@pytest.mark.django_db
def test_admin_lists_tokens_without_keys_and_revokes_them(admin_web: Client) -> None:
    make_user("sam", group="Supervisors")
    key, _ = create("sam", "CRM sync")
    token = ApiToken.objects.get()
    page = admin_web.get("/admin/screening/apitoken/").content.decode()
    assert "CRM sync" in page
    assert "sam" in page
    assert f"{token.prefix}…" in page
    assert key not in page
    assert token.key_hash not in page
    detail = admin_web.get(f"/admin/screening/apitoken/{token.pk}/change/").content.decode()
    assert key not in detail
    assert token.key_hash not in detail
    assert admin_web.get("/admin/screening/apitoken/add/").status_code == 403
    answer = admin_web.post(
        "/admin/screening/apitoken/",
        {"action": "revoke", "_selected_action": [token.pk]},
        follow=True,
    )
    assert "1 token revoked." in answer.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert get(key) == 401
