"""The decision floor: the irreducible work of one decision, in a minimal asyncio server
(``python -m screening.devtools.bench.decide_floor HTTP_PORT WS_PORT PBX_URL CLIENT_ID SECRET``).

No Django, no channel layer: one process, one aiohttp server, and per decision only what no
implementation can skip:

1. the session, looked up in memory (a dict keyed by the ``sessionid`` cookie);
2. one conditional UPDATE (``status = 'deciding' WHERE id = ? AND status = 'pending'``: exactly
   one claimant wins) and one INSERT of an audit-like row, in one transaction, on the same
   database engine as the setup (``DATABASE_URL``: the SQLite file, in WAL mode with
   ``synchronous=NORMAL`` as the product sets it, through the stdlib ``sqlite3`` on the loop; or
   PostgreSQL through psycopg's async connections, four of them like the product's four
   database threads), in tables of its own;
3. ``accept_inbound`` to the same PBX simulator, over plain HTTP on a new connection each time as
   the product sends it (the PBX closes every REST connection), with a token fetched once;
4. the outcome pushed to every operator socket (a raw ``websockets`` server on ``WS_PORT``, its
   ``broadcast`` as in the push floor), the text encoded once per push, shaped and sized like the
   product's frame (the bench hands over a product frame as the template).

Where the pending calls come from, and why: the bench injects each call at the simulator as it
does for the product (so the PBX holds a real channel and ``accept_inbound`` takes the same path
at the simulator, answer and follow-up events included), then hands the floor its call id and
channel id through ``POST /_floor/calls``, which stores the pending row and pushes it, untimed.
The product's listener is subscribed to the same simulator and records these calls too (and their
follow-up events after the floor's accept); the bench lets its intake settle before the floor's
decisions and reports the product's CPU during the floor's rounds, so that interference is
visible rather than hidden.

Control (untimed): ``POST /_floor/sessions {"sessions": [...]}`` (the cookies that may decide),
``POST /_floor/template {"text": "<a product push>"}``, ``POST /_floor/calls {"call_id",
"channel_id"}`` -> ``{"id"}``. Timed: ``POST /calls/<id>/accept`` -> the product's answer shape
(``status``, ``pbx_round_trip_ms``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from websockets.asyncio.server import ServerConnection, broadcast, serve

API = "/openapi/v1.0/"
PG_CONNECTIONS = 4
APP_NAME = "pbxscreen-decide-floor"  # how the bench tells its backends from the product's


class Database(Protocol):
    """The claim (conditional UPDATE) and the audit row (INSERT), committed together."""

    async def open(self) -> None: ...

    async def add_pending(self, call_id: str, channel_id: str) -> int: ...

    async def claim(self, pk: int, user: int, now: float) -> tuple[str, str] | None:
        """The claimed call's channel id and call id, or None when it was not pending."""
        ...


class Sqlite:
    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection

    async def open(self) -> None:
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor_call (id INTEGER PRIMARY KEY, call_id TEXT, "
            "channel_id TEXT, status TEXT, decided_by INTEGER, claimed_at REAL)"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor_audit (id INTEGER PRIMARY KEY, call INTEGER, "
            "kind TEXT, message TEXT, actor INTEGER, at REAL, detail TEXT)"
        )

    async def add_pending(self, call_id: str, channel_id: str) -> int:
        cur = self.conn.execute(
            "INSERT INTO bench_floor_call (call_id, channel_id, status) VALUES (?, ?, 'pending')",
            (call_id, channel_id),
        )
        return int(cur.lastrowid or 0)

    async def claim(self, pk: int, user: int, now: float) -> tuple[str, str] | None:
        # Directly on the loop: the least any implementation can do (no thread hop).
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(
                "UPDATE bench_floor_call SET status = 'deciding', decided_by = ?, claimed_at = ? "
                "WHERE id = ? AND status = 'pending' RETURNING channel_id, call_id",
                (user, now, pk),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "INSERT INTO bench_floor_audit (call, kind, message, actor, at, detail) "
                    "VALUES (?, 'claimed', ?, ?, ?, ?)",
                    (pk, f"operator {user} decided to accept", user, now, '{"via":"floor"}'),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return None if row is None else (str(row[0]), str(row[1]))


class Postgres:
    def __init__(self, url: str) -> None:
        self.url = url
        self.idle: asyncio.Queue[Any] = asyncio.Queue()

    async def open(self) -> None:
        import psycopg

        for _ in range(PG_CONNECTIONS):
            self.idle.put_nowait(
                await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name=APP_NAME
                )
            )
        async with self.connection() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_floor_call (id serial PRIMARY KEY, call_id text, "
                "channel_id text, status text, decided_by integer, claimed_at double precision)"
            )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_floor_audit (id serial PRIMARY KEY, "
                "call integer, kind text, message text, actor integer, at double precision, "
                "detail jsonb)"
            )

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        conn = await self.idle.get()
        try:
            yield conn
        finally:
            self.idle.put_nowait(conn)

    async def add_pending(self, call_id: str, channel_id: str) -> int:
        async with self.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO bench_floor_call (call_id, channel_id, status) "
                "VALUES (%s, %s, 'pending') RETURNING id",
                (call_id, channel_id),
            )
            row = await cur.fetchone()
        return int(row[0])

    async def claim(self, pk: int, user: int, now: float) -> tuple[str, str] | None:
        async with self.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE bench_floor_call SET status = 'deciding', decided_by = %s, claimed_at = %s "
                "WHERE id = %s AND status = 'pending' RETURNING channel_id, call_id",
                (user, now, pk),
            )
            row = await cur.fetchone()
            if row is not None:
                await conn.execute(
                    "INSERT INTO bench_floor_audit (call, kind, message, actor, at, detail) "
                    "VALUES (%s, 'claimed', %s, %s, %s, %s)",
                    (pk, f"operator {user} decided to accept", user, now, '{"via":"floor"}'),
                )
        return None if row is None else (str(row[0]), str(row[1]))


def database_from_env() -> Database:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("sqlite:"):
        return Sqlite(urlsplit(url).path)
    if url.startswith(("postgres:", "postgresql:")):
        return Postgres(url.replace("postgres://", "postgresql://", 1))
    raise SystemExit(f"decide_floor: DATABASE_URL {url!r} is neither SQLite nor PostgreSQL")


class Floor:
    def __init__(self, db: Database, pbx_url: str, client_id: str, secret: str) -> None:
        self.db = db
        self.pbx_url = pbx_url
        self.client_id, self.secret = client_id, secret
        self.token = ""
        self.http: aiohttp.ClientSession
        self.sockets: set[ServerConnection] = set()
        self.sessions: dict[str, int] = {}
        self.template: dict[str, Any] = {"type": "call", "call": {}}
        self.seq = 0

    async def start(self) -> None:
        await self.db.open()
        # A connector that never reuses a connection: the PBX closes each one after replying.
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        body = {"username": self.client_id, "password": self.secret}
        async with self.http.post(f"{self.pbx_url}{API}get_token", json=body) as response:
            answer = await response.json(content_type=None)
        if answer.get("errcode") != 0:
            raise SystemExit(f"decide_floor: no PBX token: {answer}")
        self.token = str(answer["access_token"])

    def push(self, pk: int, call_id: str, status: str) -> None:
        self.seq += 1
        body = dict(self.template)
        body.update(seq=self.seq, server_time=int(time.time() * 1000))
        body["call"] = {**self.template.get("call", {}), "id": pk, "call_id": call_id}
        body["call"]["status"] = status
        broadcast(self.sockets, json.dumps(body, separators=(",", ":")))

    # --- the timed request ---

    async def decide(self, request: web.Request) -> web.Response:
        user = self.sessions.get(request.cookies.get("sessionid", ""))
        if user is None:
            return web.json_response({"ok": False, "error": "log in"}, status=401)
        pk = int(request.match_info["pk"])
        claimed = await self.db.claim(pk, user, time.time())
        if claimed is None:
            return web.json_response({"ok": False, "error": "already decided"}, status=409)
        channel, call_id = claimed
        started = time.perf_counter()
        async with self.http.post(
            f"{self.pbx_url}{API}call/accept_inbound",
            params={"access_token": self.token},
            json={"channel_id": channel},
        ) as response:
            answer = await response.json(content_type=None)
        rtt_ms = round((time.perf_counter() - started) * 1000, 3)
        status = "accepted" if answer.get("errcode") == 0 else "failed"
        self.push(pk, call_id, status)
        body = {"ok": status == "accepted", "status": status, "pbx_round_trip_ms": rtt_ms}
        return web.json_response(body)

    # --- sockets and control ---

    async def socket(self, ws: ServerConnection) -> None:
        self.sockets.add(ws)
        try:
            await ws.wait_closed()
        finally:
            self.sockets.discard(ws)

    async def add_sessions(self, request: web.Request) -> web.Response:
        for i, sid in enumerate((await request.json())["sessions"], 1):
            self.sessions[str(sid)] = i
        return web.json_response({"sessions": len(self.sessions)})

    async def set_template(self, request: web.Request) -> web.Response:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            template = json.loads((await request.json())["text"])
            if isinstance(template, dict) and isinstance(template.get("call"), dict):
                self.template = template
        return web.json_response({"ok": True})

    async def add_call(self, request: web.Request) -> web.Response:
        body = await request.json()
        pk = await self.db.add_pending(str(body["call_id"]), str(body["channel_id"]))
        self.push(pk, str(body["call_id"]), "pending")
        return web.json_response({"id": pk})


async def main(port: int, ws_port: int, pbx_url: str, client_id: str, secret: str) -> None:
    floor = Floor(database_from_env(), pbx_url, client_id, secret)
    await floor.start()
    app = web.Application()
    app.router.add_post("/calls/{pk:[0-9]+}/accept", floor.decide)
    app.router.add_post("/_floor/sessions", floor.add_sessions)
    app.router.add_post("/_floor/template", floor.set_template)
    app.router.add_post("/_floor/calls", floor.add_call)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # No compression and no pings: the product's Daphne sockets use neither.
    async with serve(floor.socket, "127.0.0.1", ws_port, compression=None, ping_interval=None):
        print(f"decide floor listening on {port}", flush=True)
        await stop.wait()
    await floor.http.close()
    await runner.cleanup()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        ports = int(sys.argv[1]), int(sys.argv[2])
        asyncio.run(main(*ports, sys.argv[3], sys.argv[4], sys.argv[5]))
