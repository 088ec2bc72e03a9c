"""Logged-in operators as the bench sees them: an HTTP session and the operator WebSocket.

Each operator's reader task stamps every frame with ``time.time()`` the moment ``receive()``
returns, before parsing it, and files the first sighting of each (call, status) in a shared
``Tracker``. All operators share the bench's one event loop, so a frame that arrives while the loop
is busy with another operator's frame is stamped a little late: that queueing is part of what the
bench reports (a browser has a loop of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

SNAPSHOT_TIMEOUT_S = 10.0


class Tracker:
    """When each operator first saw each call in each status; wakes whoever waits for it."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], dict[int, float]] = {}
        self.pks: dict[str, int] = {}
        self._changed = asyncio.Event()

    def record(self, operator: int, call: dict[str, Any], at: float) -> None:
        call_id, status = str(call.get("call_id")), str(call.get("status"))
        if isinstance(call.get("id"), int):
            self.pks.setdefault(call_id, call["id"])
        by_operator = self.seen.setdefault((call_id, status), {})
        if operator not in by_operator:
            by_operator[operator] = at
            self._changed.set()

    def sightings(self, call_id: str, status: str) -> dict[int, float]:
        return self.seen.get((call_id, status), {})

    async def wait_seen(
        self, call_id: str, status: str, operators: set[int], deadline: float
    ) -> bool:
        """Wait until every operator in ``operators`` saw the call in ``status``; False once the
        wall-clock ``deadline`` (``time.time()``) passes."""
        try:
            async with asyncio.timeout(deadline - time.time()):
                while not operators <= self.sightings(call_id, status).keys():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True


@dataclass
class Operator:
    index: int
    username: str
    base_url: str
    http: aiohttp.ClientSession
    csrf_token: str = ""
    ws: aiohttp.ClientWebSocketResponse | None = None
    reader: asyncio.Task[None] | None = None
    last_seq: dict[str, int] = field(default_factory=dict)
    seq_gaps: int = 0
    frames: int = 0

    @classmethod
    async def connect(
        cls, index: int, username: str, session_id: str, base_url: str, tracker: Tracker
    ) -> Operator:
        # unsafe=True: aiohttp's default jar ignores cookies for IP-address hosts like 127.0.0.1.
        jar = aiohttp.CookieJar(unsafe=True)
        jar.update_cookies({"sessionid": session_id}, URL(base_url))
        http = aiohttp.ClientSession(cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=15))
        operator = cls(index, username, base_url, http)
        try:
            await operator._fetch_csrf_token()
            await operator._open_socket(tracker)
        except BaseException:
            await operator.close()
            raise
        return operator

    async def _fetch_csrf_token(self) -> None:
        # Any page with a form sets the CSRF cookie, like a browser loading the dashboard. This
        # also opens the keep-alive connection the decisions reuse, as a browser's would.
        async with self.http.get(f"{self.base_url}/login/") as response:
            response.raise_for_status()
            await response.read()
        cookie = self.http.cookie_jar.filter_cookies(URL(self.base_url)).get("csrftoken")
        if cookie is None:
            raise RuntimeError("the login page did not set a CSRF cookie")
        self.csrf_token = cookie.value

    async def _open_socket(self, tracker: Tracker) -> None:
        ws_url = self.base_url.replace("http", "ws", 1) + "/ws/operator/"
        self.ws = await self.http.ws_connect(ws_url, origin=self.base_url, autoping=True)
        first = await self.ws.receive(timeout=SNAPSHOT_TIMEOUT_S)
        if first.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"{self.username}: the operator socket closed ({first.type.name})")
        snapshot = json.loads(first.data)
        if snapshot.get("type") != "snapshot":
            raise RuntimeError(f"{self.username}: expected a snapshot first, got {snapshot!r}")
        self.last_seq = {str(k): int(v) for k, v in (snapshot.get("seq") or {}).items()}
        self.reader = asyncio.create_task(self._read(tracker), name=f"reader-{self.username}")

    async def _read(self, tracker: Tracker) -> None:
        assert self.ws is not None
        async for message in self.ws:
            at = time.time()  # stamped before anything else, parsing included
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            self.frames += 1
            body = json.loads(message.data)
            self._check_seq(body)
            if body.get("type") == "call" and isinstance(body.get("call"), dict):
                tracker.record(self.index, body["call"], at)

    def _check_seq(self, body: dict[str, Any]) -> None:
        stream, seq = body.get("stream"), body.get("seq")
        if not isinstance(stream, str) or not isinstance(seq, int):
            return
        last = self.last_seq.get(stream)
        if last is not None and seq > last + 1:
            self.seq_gaps += seq - last - 1
        self.last_seq[stream] = max(seq, last or 0)

    async def decide(self, pk: int, action: str = "accept") -> tuple[float, float, int, Any]:
        """POST the decision; returns (wall start, wall end, HTTP status, JSON body or text)."""
        headers = {"X-CSRFToken": self.csrf_token, "Referer": f"{self.base_url}/"}
        started = time.time()
        async with self.http.post(f"{self.base_url}/calls/{pk}/{action}", headers=headers) as r:
            raw = await r.read()
        ended = time.time()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw[:200].decode(errors="replace")
        return started, ended, r.status, body

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader
        await self.http.close()
