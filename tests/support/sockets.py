"""An operator's dashboard socket held open from a thread, for tests that keep using the ORM."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import TYPE_CHECKING, Any

import aiohttp

from tests.support.live import session_for

if TYPE_CHECKING:
    from tests.conftest import Live


class OperatorSocket:
    """An operator's dashboard socket held open from a thread, collecting what it is sent, so a
    synchronous test can keep using the ORM while someone is online."""

    def __init__(self, live: Live, user: Any) -> None:
        self.url = live.url.replace("http://", "ws://") + "/ws/operator/"
        http = session_for(live.server, user)
        self.headers = {"Origin": live.url, "Cookie": f"sessionid={http.cookies['sessionid']}"}
        self.messages: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.ws_connect(self.url, headers=self.headers) as ws,
            ):
                while not self._stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.05)
                    except TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        raise AssertionError(f"socket closed: {msg}")
                    self.messages.append(json.loads(msg.data))
                    self._ready.set()  # the snapshot comes after the presence row is written
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> OperatorSocket:
        self._thread.start()
        assert self._ready.wait(10), "no snapshot"
        if self._error:
            raise self._error
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def statuses(self, call_id: str) -> list[str]:
        """Every status this socket was shown for the call, snapshots included."""
        seen = []
        for msg in list(self.messages):
            calls = [msg["call"]] if "call" in msg else msg.get("calls", []) + msg.get("recent", [])
            seen += [c["status"] for c in calls if c.get("call_id") == call_id]
        return seen
