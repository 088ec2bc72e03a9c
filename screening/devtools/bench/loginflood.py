"""The suite's ``login`` part: how a flood of logins slows decisions.

Operators decide one call at a time (POST accept, one operator after the other) in three phases:

1. **quiet**: nothing else happens;
2. **flood, one address**: ``login_flood`` concurrent loops POST the login forms (the site's and
   the admin's, alternately) with random usernames and wrong passwords from the bench's own
   address; the per-address limit is what should stop them;
3. **flood, many addresses**: the same, each POST from a random address (``X-Forwarded-For``, the
   server runs with ``PROXY_HEADERS=true``), so no address limit applies: only the bound on
   password checks at once stands between the flood and the cores;
4. **control: page views**: as many concurrent loops only GET the login form, which checks no
   password: what that many requests cost by themselves, whatever they are.

Per phase: the decide POST round trip (p50, p95, p99) and what the flood got back (status counts,
requests per second). Password hashing takes a core per check outside the GIL; without a bound a
flood of 40 took both cores of a 2-core machine and decisions waited for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from typing import Any

import aiohttp

from screening.devtools.bench.stats import percentile, summarize
from screening.devtools.bench.suite import CSRF, FINAL, Suite, open_operators
from screening.devtools.bench.wsclients import close_clients

PHASES = ("quiet", "flood, one address", "flood, many addresses", "control: page views")
LOGIN_PATHS = ("/login/", "/admin/login/")
SETTLE_S = 1.0  # the flood reaches its steady state before decisions are measured


def with_p95(samples: list[float]) -> dict[str, Any]:
    summary = summarize(samples)
    summary["p95"] = round(percentile(sorted(samples), 95), 3) if samples else None
    return summary


async def run(suite: Suite) -> dict[str, Any]:
    cfg = suite.config
    n = cfg.decide_operators
    pks: dict[str, int] = {}
    final: set[str] = set()
    changed = asyncio.Event()

    def on_frame(_index: int, _at: float, text: str) -> None:
        if '"type":"call"' not in text[:40]:
            return
        call = json.loads(text)["call"]
        pks[str(call["call_id"])] = call["id"]
        if call["status"] == FINAL:
            final.add(str(call["call_id"]))
        changed.set()

    async def until(predicate: Any) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(cfg.timeout):
                while not predicate():
                    changed.clear()
                    await changed.wait()

    async def decide_once(decider: int) -> dict[str, Any]:
        call_id = await suite.inject()
        await until(lambda: call_id in pks)
        record = await suite._post(decider, call_id, pks.get(call_id))
        await until(lambda: call_id in final)
        return record

    async def flood(
        stop: asyncio.Event, many: bool, views_only: bool, statuses: Counter[int], worker: int
    ) -> None:
        rng = random.Random(worker)  # noqa: S311 - made-up usernames and addresses
        while not stop.is_set():
            base = suite.dep.web_urls[worker % len(suite.dep.web_urls)]
            headers = {"Cookie": f"csrftoken={CSRF}", "Referer": f"{base}/login/"}
            if many:
                headers["X-Forwarded-For"] = (
                    f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                )
            form = {
                "username": f"flood-{rng.getrandbits(48):012x}",
                "password": "not-the-password",
                "csrfmiddlewaretoken": CSRF,
            }
            path = LOGIN_PATHS[worker % 2]
            request = (
                suite.http.get(f"{base}{path}", headers=headers)
                if views_only
                else suite.http.post(
                    f"{base}{path}", data=form, headers=headers, allow_redirects=False
                )
            )
            try:
                async with request as response:
                    await response.read()
                    statuses[response.status] += 1
            except (aiohttp.ClientError, TimeoutError):
                statuses[0] += 1  # no answer at all

    clients = await open_operators(suite.dep, suite.sessions[:n], on_frame=on_frame)
    phases: dict[str, Any] = {}
    decider = 0
    try:
        await asyncio.sleep(0.5)
        for phase in PHASES:
            print(
                f"bench: login, {phase}: {cfg.login_rounds} decisions"
                + (f", {cfg.login_flood} concurrent requests" if phase != "quiet" else ""),
                flush=True,
            )
            stop = asyncio.Event()
            statuses: Counter[int] = Counter()
            flooders = []
            if phase != "quiet":
                many = phase.endswith("many addresses")
                views_only = phase.startswith("control")
                flooders = [
                    asyncio.create_task(flood(stop, many, views_only, statuses, w))
                    for w in range(cfg.login_flood)
                ]
                await asyncio.sleep(SETTLE_S)
            flood_started, counted_before = time.monotonic(), sum(statuses.values())
            records = []
            try:
                for i in range(cfg.login_rounds + 1):  # the first one warms up
                    record = await decide_once(decider % n)
                    decider += 1
                    if i:
                        records.append(record)
                    await asyncio.sleep(0.2)
            finally:
                elapsed = time.monotonic() - flood_started
                counted = sum(statuses.values()) - counted_before
                stop.set()
                await asyncio.gather(*flooders, return_exceptions=True)
            round_trips = [
                (r["ended"] - r["started"]) * 1000 for r in records if r["status"] == 200
            ]
            phases[phase] = {
                "decide_round_trip": with_p95(round_trips),
                "decide_errors": sum(1 for r in records if r["status"] != 200),
                "flood": {
                    "concurrent": 0 if phase == "quiet" else cfg.login_flood,
                    "statuses": {str(k): v for k, v in sorted(statuses.items())},
                    "per_second": round(counted / elapsed, 1) if flooders and elapsed else 0,
                },
            }
    finally:
        await close_clients(clients)
    return {"operators": n, "rounds": cfg.login_rounds, "phases": phases}
