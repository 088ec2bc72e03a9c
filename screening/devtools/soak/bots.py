"""Operator bots: WebSocket clients that behave like ``static/screening/dashboard.js``.

A bot keeps the calls from the snapshot and the pushes, asks for a snapshot when a sequence number
skips, reconnects (to the next server in its list) when the socket closes, and decides calls over
HTTP with the session and CSRF cookies, as the browser does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import aiohttp

OPEN = frozenset({"pending", "deciding"})


@dataclass(frozen=True)
class Credentials:
    """What a logged-in browser holds: the session cookie and a CSRF token (cookie = header)."""

    sessionid: str
    csrftoken: str

    @property
    def cookie(self) -> str:
        return f"sessionid={self.sessionid}; csrftoken={self.csrftoken}"


def login(user: Any) -> Credentials:
    """A session row for ``user`` in the database every server reads (like ``force_login``)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = user._meta.pk.value_to_string(user)
    store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]  # as a login stores
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.save()
    # Django accepts any well-formed secret in the cookie, echoed in the header.
    return Credentials(store.session_key, secrets.token_hex(16))


@dataclass
class Decided:
    call_id: str
    pk: int
    action: str
    http_status: int
    status: str  # the call's status in the answer ("" if the answer was not JSON)
    error: str
    at: float
    server: str


@dataclass
class Persona:
    """How a bot decides: never, or sometimes after a human-like delay."""

    decides: bool = True
    probability: float = 0.3  # chance to go for any one new call
    accept_ratio: float = 0.7
    delay_median: float = 2.5  # seconds; log-normal, so a few decide too late
    delay_sigma: float = 0.6

    def plan(self, rng: random.Random) -> tuple[str, float] | None:
        if not self.decides or rng.random() >= self.probability:
            return None
        action = "accept" if rng.random() < self.accept_ratio else "refuse"
        return action, rng.lognormvariate(0.0, self.delay_sigma) * self.delay_median


class Operator:
    def __init__(
        self,
        name: str,
        servers: list[str],
        credentials: Credentials,
        *,
        persona: Persona | None = None,
        seed: int | None = None,
        reconnect_cap: float = 2.0,
    ) -> None:
        self.name = name
        self.servers = servers
        self.credentials = credentials
        self.persona = persona or Persona(decides=False)
        self.rng = random.Random(seed)  # noqa: S311 (simulated humans, not security)
        self.reconnect_cap = reconnect_cap
        self.calls: dict[int, dict[str, Any]] = {}  # open calls by pk
        self.finished: dict[int, dict[str, Any]] = {}
        self.seq: dict[str, int] = {}
        self.link: dict[str, Any] | None = None
        self.link_history: list[tuple[float, dict[str, Any]]] = []
        self.decisions: list[Decided] = []
        self.server: str | None = None  # where the socket is connected now
        self.connected = asyncio.Event()
        self.snapshots = 0
        self.gaps = 0
        self.resyncs = 0
        self.connects = 0
        self.errors: list[str] = []
        self._server_index = 0
        self._stopping = False
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- connection ----------------------------------------------------------------------

    def headers(self, server: str) -> dict[str, str]:
        return {"Cookie": self.credentials.cookie, "Origin": server}

    async def run(self) -> None:
        """Stay connected until ``stop``: on any failure, try the next server after a backoff."""
        self._http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        retries = 0
        try:
            while not self._stopping:
                server = self.servers[self._server_index % len(self.servers)]
                snapshots = self.snapshots
                try:
                    await self._session(server)
                    if self.snapshots > snapshots:  # served (not closed at once): like the page
                        retries = 0
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    self.errors.append(f"{server}: {type(exc).__name__} {exc}"[:200])
                self.connected.clear()
                self.server = None
                if self._stopping:
                    break
                self._server_index += 1  # the browser's proxy would pick another backend
                delay = min(self.reconnect_cap, 0.1 * 2**retries) * self.rng.uniform(0.5, 1.0)
                retries += 1
                await asyncio.sleep(delay)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._http.close()

    async def stop(self) -> None:
        self._stopping = True
        if self._ws is not None:
            await self._ws.close()

    async def _session(self, server: str) -> None:
        assert self._http is not None
        url = server.replace("http", "ws", 1) + "/ws/operator/"
        async with self._http.ws_connect(
            url, headers=self.headers(server), heartbeat=None, max_msg_size=8 * 1024 * 1024
        ) as ws:
            self._ws = ws
            self.server = server
            self.connects += 1
            try:
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        self._handle(json.loads(msg.data))
            finally:
                self._ws = None

    async def send(self, message: dict[str, Any]) -> None:
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_str(json.dumps(message))

    # --- messages (dashboard.js: handle, checkSequence, applySnapshot, upsert) ----------------

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "snapshot":
            self._apply_snapshot(msg)
        elif kind == "resync":  # the server's layer may have lost pushes: ask for the truth
            self.resyncs += 1
            self._spawn(self.send({"type": "snapshot"}))
        elif kind in {"call", "link"}:
            if not self._check_sequence(msg):
                return
            if kind == "call":
                self._upsert(msg["call"], from_push=True)
            else:
                self._show_link(msg["link"])

    def _check_sequence(self, msg: dict[str, Any]) -> bool:
        last = self.seq.get(msg["stream"])
        if last is None:
            return True
        if msg["seq"] <= last:
            return msg["type"] == "call"  # late: versions decide for calls
        if msg["seq"] > last + 1:
            self.gaps += 1
            self._spawn(self.send({"type": "snapshot"}))
        self.seq[msg["stream"]] = msg["seq"]
        return True

    def _apply_snapshot(self, msg: dict[str, Any]) -> None:
        self.snapshots += 1
        self.seq = dict(msg["seq"])
        known = set(self.calls)
        self.calls.clear()
        for call in msg["calls"]:
            self.calls[call["id"]] = call
            if call["id"] not in known and call["status"] == "pending":
                self._new_call(call)
        for call in msg["recent"]:
            self._remember_finished(call)
        self._show_link(msg["link"])
        self.connected.set()

    def _upsert(self, call: dict[str, Any], *, from_push: bool) -> None:
        current = self.calls.get(call["id"]) or self.finished.get(call["id"])
        if current is not None and current["version"] > call["version"]:
            return
        if call["status"] in OPEN:
            self.calls[call["id"]] = call
            if current is None and from_push and call["status"] == "pending":
                self._new_call(call)
        else:
            self.calls.pop(call["id"], None)
            self._remember_finished(call)

    def _remember_finished(self, call: dict[str, Any]) -> None:
        current = self.finished.get(call["id"])
        if current is None or current["version"] <= call["version"]:
            self.finished[call["id"]] = call

    def _show_link(self, link: dict[str, Any]) -> None:
        self.link = link
        self.link_history.append((time.time(), link))

    # --- deciding ----------------------------------------------------------------------------

    def _new_call(self, call: dict[str, Any]) -> None:
        plan = self.persona.plan(self.rng)
        if plan is not None:
            action, delay = plan
            self._spawn(self._decide_later(call, action, delay))

    async def _decide_later(self, call: dict[str, Any], action: str, delay: float) -> None:
        await asyncio.sleep(delay)
        current = self.calls.get(call["id"])
        # Like the browser: only a call still shown as pending, before its last useful moment.
        if current is None or current["status"] != "pending":
            return
        if time.time() * 1000 >= current.get("last_useful", float("inf")):
            return
        await self.decide(call, action)

    async def decide(self, call: dict[str, Any], action: str) -> Decided:
        """POST /calls/<pk>/<action> to the server this bot is connected to."""
        assert self._http is not None
        server = self.server or self.servers[self._server_index % len(self.servers)]
        headers = {**self.headers(server), "X-CSRFToken": self.credentials.csrftoken}
        headers["Referer"] = server + "/"
        status, error, http_status = "", "", 0
        try:
            async with self._http.post(
                f"{server}/calls/{call['id']}/{action}",
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=30),
            ) as response:
                http_status = response.status
                try:
                    body = await response.json(content_type=None)
                    status = str(body.get("status", ""))
                    error = str(body.get("error", ""))
                except ValueError:
                    error = (await response.text())[:200]
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
        decided = Decided(
            call["call_id"], call["id"], action, http_status, status, error, time.time(), server
        )
        self.decisions.append(decided)
        return decided

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- for tests ---------------------------------------------------------------------------

    def sees(self, call_id: str, status: str | None = None) -> dict[str, Any] | None:
        for call in (*self.calls.values(), *self.finished.values()):
            if call["call_id"] == call_id and status in (None, call["status"]):
                return call
        return None

    async def until(
        self, predicate: Callable[[Operator], Any], within: float = 10.0, what: str = ""
    ) -> Any:
        end = time.monotonic() + within
        while not (value := predicate(self)):
            if time.monotonic() > end:
                raise AssertionError(f"{self.name}: timed out waiting for {what or predicate}")
            await asyncio.sleep(0.02)
        return value


@dataclass
class Crowd:
    """Many operators run as tasks on the current loop."""

    operators: list[Operator] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(op.run()) for op in self.operators]

    async def connected(self, within: float = 20.0) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(op.connected.wait() for op in self.operators)), within
        )

    async def stop(self) -> None:
        await asyncio.gather(*(op.stop() for op in self.operators))
        await asyncio.gather(*self._tasks, return_exceptions=True)
