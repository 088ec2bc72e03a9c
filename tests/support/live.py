"""A real pbxscreen server process (`manage.py serve` under Daphne) for integration tests.

The server shares the test database with the test process (a SQLite file or the PostgreSQL test
database), so tests arrange users with the ORM and check the audit with the ORM, while everything in
between goes over real sockets.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.db import connection
from django.test import Client

from screening.calls.roles import setup_roles
from screening.devtools.procs import ChildProcess, start_manage

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url() -> str:
    """The URL of the database this test process is using (the test database)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(str(s['NAME'])).resolve()}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@dataclass
class LiveServer(ChildProcess):
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def health(self) -> dict[str, Any]:
        return requests.get(f"{self.url}/healthz", timeout=5).json()


def start_server(tmp_path: Path, env: dict[str, str], *, timeout: float = 30.0) -> LiveServer:
    """Start `manage.py serve` and wait until it answers /healthz with the PBX link up (when a
    PBX is configured)."""
    port = free_port()
    # No contact sync unless a test asks: the simulator's generated contacts would put names on
    # other tests' cards.
    full_env = {
        "CONTACT_SYNC_MINUTES": "0",
        **os.environ,
        "DATABASE_URL": database_url(),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    child = start_manage(
        f"server-{port}", ["serve", "--port", str(port)], env=full_env, log_dir=tmp_path, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    server = LiveServer(child.name, child.process, child.log_path, url=url, env=full_env)
    want_link = bool(env.get("PBX_BASE_URL")) and env.get("PBX_EVENTS", "websocket") == "websocket"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            health = server.health()
            if not want_link or health["pbx_link"]["state"] == "up":
                return server
        except (requests.ConnectionError, ValueError):
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"server did not come up in {timeout} s:\n{server.log()}")


def make_user(
    username: str, *, group: str | None = "Operators", password: str | None = None, **extra: Any
) -> AbstractBaseUser:
    setup_roles()
    user = get_user_model().objects.create_user(username=username, password=password, **extra)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def session_for(server: LiveServer, user: AbstractBaseUser) -> requests.Session:
    """A requests session logged in as ``user`` with a CSRF token, like a browser after login."""
    client = Client()
    client.force_login(user)  # the session row lands in the shared database
    http = requests.Session()
    http.cookies.set("sessionid", client.cookies["sessionid"].value)
    http.get(f"{server.url}/login/", timeout=5)  # any page with a form sets the csrftoken cookie
    token = http.cookies.get("csrftoken")
    assert token, "the login page did not set a CSRF cookie"
    http.headers.update({"X-CSRFToken": token, "Referer": f"{server.url}/"})
    return http


def wait_for(
    predicate: Any, *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll until ``predicate()`` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(interval)


async def until(
    predicate: Any, *, within: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """``wait_for`` inside an event loop: the loop's other tasks run between polls. The predicate
    must not touch the database (that is sync-only)."""
    deadline = time.monotonic() + within
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(interval)
    return value
