"""Faults injected into the simulated PBX during a soak, each with its recovery time measured."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

CLEAR = {
    "latency_ms": 0,
    "error_rate": 0.0,
    "http_500_rate": 0.0,
    "non_json_rate": 0.0,
    "refuse_websocket": False,
}
# A link outage comes early, so even a short soak records calls offered while the link was down.
KINDS = (
    "drop_sockets",
    "link_outage",
    "latency_spike",
    "error_burst",
    "revoke_token",
    "ws_outage",
)


@dataclass
class Injected:
    kind: str
    at: float
    detail: str
    recovery_s: float | None = None  # None: nothing to recover from, or not seen in time
    token_grants: int | None = None


@dataclass
class FaultDriver:
    sim_url: str
    rng: random.Random
    interval: float
    injected: list[Injected] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None

    async def _get(self, path: str, **params: Any) -> Any:
        assert self._http is not None
        async with self._http.get(f"{self.sim_url}/_sim/{path}", params=params) as response:
            return await response.json()

    async def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self._http is not None
        async with self._http.post(f"{self.sim_url}/_sim/{path}", json=body or {}) as response:
            return await response.json()

    async def set_faults(self, **faults: Any) -> None:
        await self._post("faults", faults)

    async def clear(self) -> None:
        async with aiohttp.ClientSession() as http:
            self._http = http
            await self.set_faults(**CLEAR)

    async def run(self, until: float) -> None:
        async with aiohttp.ClientSession() as http:
            self._http = http
            index = 0
            await asyncio.sleep(min(self.interval, max(0.0, until - time.time())) / 2)
            while time.time() + 2 < until:
                kind = KINDS[index % len(KINDS)]
                index += 1
                try:
                    await getattr(self, kind)(until)
                finally:
                    await self.set_faults(**CLEAR)
                await asyncio.sleep(max(0.0, min(self.interval, until - time.time())))

    async def _last_seq(self) -> int:
        entries = (await self._get("log", since=0))["entries"]
        return entries[-1]["seq"] if entries else 0

    async def _subscribes(self) -> int:
        return len((await self._get("log", endpoint="subscribe"))["entries"])

    async def _until_subscribed(self, before: int, within: float = 15.0) -> float | None:
        started = time.monotonic()
        while time.monotonic() - started < within:
            state = await self._get("state")
            if await self._subscribes() > before and state["subscribed_websockets"] >= 1:
                return time.monotonic() - started
            await asyncio.sleep(0.02)
        return None

    async def _until_decision_ok(self, since: int, within: float = 15.0) -> float | None:
        """Seconds until the PBX carried out a decision again (needs a call to be decided)."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            for entry in (await self._get("log", since=since))["entries"]:
                if entry["endpoint"].startswith("call/") and entry["errcode"] == 0:
                    return time.monotonic() - started
            await asyncio.sleep(0.05)
        return None

    # --- the faults --------------------------------------------------------------------------

    async def drop_sockets(self, until: float) -> None:
        before = await self._subscribes()
        record = Injected("drop_sockets", time.time(), "the PBX closed our event WebSocket")
        await self._post("drop_sockets")
        record.recovery_s = await self._until_subscribed(before)
        self.injected.append(record)

    async def ws_outage(self, until: float) -> None:
        """The PBX refuses WebSockets for a while; recovery counts from when it accepts again."""
        seconds = self.rng.uniform(2.0, 4.0)
        record = Injected("ws_outage", time.time(), f"WebSocket refused for {seconds:.1f} s")
        await self.set_faults(refuse_websocket=True)
        before = await self._subscribes()
        await self._post("drop_sockets")
        await asyncio.sleep(seconds)
        await self.set_faults(refuse_websocket=False)
        record.recovery_s = await self._until_subscribed(before)
        self.injected.append(record)

    async def link_outage(self, until: float) -> None:
        """The event link is down for longer than the PBX's window: calls offered meanwhile are
        routed by the PBX with nobody asked, and must be recorded as unscreened afterwards."""
        seconds = self.rng.uniform(8.0, 15.0)
        record = Injected("link_outage", time.time(), f"event link down for {seconds:.1f} s")
        await self.set_faults(refuse_websocket=True)
        before = await self._subscribes()
        await self._post("drop_sockets")
        await asyncio.sleep(min(seconds, max(0.0, until - time.time() - 2)))
        await self.set_faults(refuse_websocket=False)
        record.recovery_s = await self._until_subscribed(before)
        self.injected.append(record)

    async def latency_spike(self, until: float) -> None:
        latency = self.rng.uniform(2000, 9000)
        seconds = self.rng.uniform(3.0, 5.0)
        record = Injected("latency_spike", time.time(), f"{latency:.0f} ms for {seconds:.1f} s")
        await self.set_faults(latency_ms=latency)
        await asyncio.sleep(seconds)
        since = await self._last_seq()
        await self.set_faults(latency_ms=0)
        record.recovery_s = await self._until_decision_ok(since)
        self.injected.append(record)

    async def error_burst(self, until: float) -> None:
        seconds = self.rng.uniform(2.0, 4.0)
        record = Injected(
            "error_burst", time.time(), f"errcode -2 / HTTP 500 / HTML answers for {seconds:.1f} s"
        )
        await self.set_faults(error_rate=0.5, http_500_rate=0.2, non_json_rate=0.1)
        await asyncio.sleep(seconds)
        since = await self._last_seq()
        await self.set_faults(error_rate=0.0, http_500_rate=0.0, non_json_rate=0.0)
        record.recovery_s = await self._until_decision_ok(since)
        self.injected.append(record)

    async def revoke_token(self, until: float) -> None:
        since = await self._last_seq()
        record = Injected("revoke_token", time.time(), "every PBX token revoked")
        await self._post("tokens/revoke")
        record.recovery_s = await self._until_decision_ok(since)
        # Counted up to the next fault: however many processes need a token, one new one.
        await asyncio.sleep(max(0.0, min(self.interval, until - time.time()) - 1))
        entries = (await self._get("log", since=since))["entries"]
        record.token_grants = sum(
            1
            for e in entries
            if e["endpoint"] in {"get_token", "refresh_token"} and e["errcode"] == 0
        )
        self.injected.append(record)
