"""What the bench runs against: the throw-away database, the simulator, a real server process.

Everything here runs in the bench worker, whose Django database *is* the throw-away database
(``DATABASE_URL`` was set before Django started), so users and sessions are made with the ORM and
the server process reads the very same rows.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client

from screening.calls.roles import setup_roles
from screening.devtools.procs import ChildProcess, start_manage

# BENCH_REDIS_URL: another database when 15 is taken (it is flushed before each run).
REDIS_BENCH_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
SERVER_START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare_database(operators: int) -> dict[str, str]:
    """Migrate the throw-away database, create the operators; returns {username: sessionid}."""
    call_command("migrate", interactive=False, verbosity=0)
    setup_roles()
    group = Group.objects.get(name="Operators")
    sessions: dict[str, str] = {}
    for i in range(operators):
        user = get_user_model().objects.create_user(
            username=f"bench-op{i:02d}", first_name=f"Bench{i:02d}", last_name="Operator"
        )
        user.groups.add(group)
        client = Client()
        client.force_login(user)  # the session row lands in the database the server reads
        sessions[user.get_username()] = client.cookies[settings.SESSION_COOKIE_NAME].value
    return sessions


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()


@dataclass
class ServerProcess(ChildProcess):
    """``manage.py serve`` in a child process; its output goes to ``log_path``."""

    url: str = ""
    port: int = 0

    @classmethod
    def start(cls, workdir: Path, env: dict[str, str]) -> ServerProcess:  # type: ignore[override]
        port = free_port()
        child = start_manage(
            f"server-{port}", ["serve", "--port", str(port)], env=env, log_dir=workdir
        )
        url = f"http://127.0.0.1:{port}"
        server = cls(child.name, child.process, child.log_path, url=url, port=port)
        try:
            server.wait_until_linked()
        except BaseException:
            server.stop()
            raise
        return server

    def wait_until_linked(self) -> None:
        """Wait for /healthz to answer with the PBX link up (the listener has subscribed)."""
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check()
            try:
                health = requests.get(f"{self.url}/healthz", timeout=2).json()
                if health["pbx_link"]["state"] == "up":
                    return
            except (requests.RequestException, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise RuntimeError(
            f"the server did not link to the PBX in {SERVER_START_TIMEOUT_S:g} s:\n"
            f"{self.log_tail()}"
        )

    def log_tail(self) -> str:
        return self.tail()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        # Other work on the machine skews every number: the table warns when this exceeds cores.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "versions": {
            name: _version(name)
            for name in ("Django", "channels", "daphne", "Twisted", "aiohttp", "channels-redis")
        },
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
