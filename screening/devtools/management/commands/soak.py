"""`manage.py soak`: the scale-out setup under load and faults, then its invariants checked.

Needs PostgreSQL and Redis (the setup it exercises). It creates a throw-away database next to the
one in DATABASE_URL and uses a Redis database of its own (``--redis-db``, flushed first), runs the
worker (``python -m screening.devtools.soak``) against them, and drops the database at the end. Exit
status 1 on any invariant violation (see ``screening/devtools/soak/invariants.py``).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from psycopg import sql

NEEDS = (
    "soak needs PostgreSQL and Redis: set DATABASE_URL=postgres://user@host:5432/db (the soak "
    "creates and drops a database beside it) and REDIS_URL=redis://host:6379/0 (the soak uses "
    "--redis-db on that server and flushes it)"
)


class Command(BaseCommand):
    help = "Soak the scale-out setup (simulator, pbx_listen, 2 x serve, bot operators, faults)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--minutes", type=float, default=5.0)
        parser.add_argument("--operators", type=int, default=50)
        parser.add_argument("--call-rate", type=float, default=5.0, help="calls per second")
        parser.add_argument("--faults", choices=("on", "off"), default="on")
        parser.add_argument("--web", type=int, default=2, help="serve processes (2)")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--redis-db", type=int, default=13, help="Redis database the soak flushes and uses"
        )
        parser.add_argument("--keep-db", action="store_true", help="keep the soak database")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["minutes"] <= 0 or options["operators"] < 1 or options["call_rate"] <= 0:
            raise CommandError("--minutes, --operators and --call-rate must be positive")
        database = settings.DATABASES["default"]
        if database["ENGINE"] != "django.db.backends.postgresql" or not settings.REDIS_URL:
            raise CommandError(NEEDS)
        redis_url = _with_db(settings.REDIS_URL, options["redis_db"])
        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=3).flushdb()
        except redis.RedisError as exc:
            raise CommandError(f"{NEEDS}. Redis: {exc}") from exc
        name = f"pbxscreen_soak_{os.getpid()}"
        admin_url = _pg_url(database, "postgres")
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise CommandError(f"{NEEDS}. PostgreSQL: {exc}") from exc
        seed = options["seed"] if options["seed"] is not None else random.randrange(10**6)  # noqa: S311 (a seed)
        self.stdout.write(f"soak: database {name}, Redis {redis_url}, seed {seed}")
        try:
            with tempfile.TemporaryDirectory(prefix="pbxscreen-soak-") as workdir:
                worker_options = {
                    "minutes": options["minutes"],
                    "operators": options["operators"],
                    "call_rate": options["call_rate"],
                    "faults": options["faults"] == "on",
                    "seed": seed,
                    "web": options["web"],
                    "workdir": workdir,
                }
                env = {
                    **os.environ,
                    "DATABASE_URL": _pg_url(database, name),
                    "REDIS_URL": redis_url,
                }
                returncode = subprocess.call(  # noqa: S603 (our own interpreter and module)
                    [sys.executable, "-m", "screening.devtools.soak", json.dumps(worker_options)],
                    env=env,
                )
        finally:
            if not options["keep_db"]:
                with psycopg.connect(admin_url, autocommit=True) as conn:
                    conn.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(name)
                        )
                    )
        if returncode != 0:
            raise CommandError(f"soak failed (worker exit status {returncode})")


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def _pg_url(database: dict[str, Any], name: str) -> str:
    auth = database["USER"] or ""
    if database.get("PASSWORD"):
        auth += f":{database['PASSWORD']}"
    host = database["HOST"] or "127.0.0.1"
    port = database["PORT"] or 5432
    return f"postgres://{auth}{'@' if auth else ''}{host}:{port}/{name}"
