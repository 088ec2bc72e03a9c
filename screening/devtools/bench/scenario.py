"""The measured loop: inject calls at the simulator, watch them reach every operator, decide them.

Clocks: every timestamp is ``time.time()`` in this one process. The simulator runs in a thread of
this process and stamps ``offered_at`` with ``time.time()`` right before it queues the 30016 frame
on its loop (the frame leaves on that loop's next turn), so "push latency" = first sighting of the
call as *pending* on an operator socket minus ``offered_at`` compares readings of one clock.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

from screening.devtools.bench.clients import Operator, Tracker
from screening.devtools.bench.stats import summarize

PENDING = "pending"
FINAL = "accepted"
CALLED = "02079460000"
TRUNK = "peer-to-41"


@dataclass(frozen=True)
class Config:
    operators: int
    calls: int
    gap: float
    concurrent_deciders: int = 1
    warmup: int = 1
    timeout: float = 5.0  # a push not seen this long after its cause counts as lost


@dataclass
class CallRecord:
    n: int
    round: int
    warmup: bool
    call_id: str
    inject_started: float
    inject_ended: float
    offered_at: float | None = None
    pk: int | None = None
    decider: int | None = None
    decide_started: float | None = None
    decide_ended: float | None = None
    http_status: int | None = None
    decided_status: str | None = None
    pbx_round_trip_ms: float | None = None
    error: str | None = None
    push_ms: dict[int, float] = field(default_factory=dict)  # operator -> ms after offered_at
    final_ms: dict[int, float] = field(default_factory=dict)  # operator -> ms after the POST


class Scenario:
    def __init__(
        self, config: Config, base_url: str, sim_url: str, sessions: dict[str, str]
    ) -> None:
        self.config = config
        self.base_url = base_url
        self.sim_url = sim_url
        self.sessions = sessions
        self.tracker = Tracker()
        self.operators: list[Operator] = []
        self.records: list[CallRecord] = []
        self._next_decider = 0

    async def run(self) -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as sim_http:
            try:
                self.operators = list(
                    await asyncio.gather(
                        *(
                            Operator.connect(i, name, sid, self.base_url, self.tracker)
                            for i, (name, sid) in enumerate(self.sessions.items())
                        )
                    )
                )
                for _ in range(self.config.warmup):
                    await self._round(sim_http, 1, warmup=True)
                    await asyncio.sleep(self.config.gap)
                left = self.config.calls
                while left > 0:
                    size = min(self.config.concurrent_deciders, left)
                    await self._round(sim_http, size, warmup=False)
                    left -= size
                    await asyncio.sleep(self.config.gap)
            finally:
                await asyncio.gather(*(op.close() for op in self.operators))
            await self._fill_offered_at(sim_http)
        return self._results()

    async def _round(self, sim_http: aiohttp.ClientSession, size: int, *, warmup: bool) -> None:
        """Inject ``size`` calls one after the other, wait until every operator shows them, then
        have ``size`` different operators accept them at the same moment."""
        round_no = 1 + max((r.round for r in self.records), default=0)
        batch = [await self._inject(sim_http, round_no, warmup) for _ in range(size)]
        everyone = set(range(len(self.operators)))
        await asyncio.gather(
            *(
                self.tracker.wait_seen(
                    r.call_id, PENDING, everyone, r.inject_started + self.config.timeout
                )
                for r in batch
            )
        )
        deciding = []
        for record in batch:
            record.pk = self.tracker.pks.get(record.call_id)
            if record.pk is None:
                record.error = "no operator saw the call: nothing to decide"
                continue
            record.decider = self._next_decider % len(self.operators)
            self._next_decider += 1
            deciding.append(record)
        decided_at = time.time()
        await asyncio.gather(*(self._decide(r) for r in deciding))
        await asyncio.gather(
            *(
                self.tracker.wait_seen(r.call_id, FINAL, everyone, decided_at + self.config.timeout)
                for r in deciding
            )
        )

    async def _inject(
        self, sim_http: aiohttp.ClientSession, round_no: int, warmup: bool
    ) -> CallRecord:
        n = len(self.records) + 1
        body = {"from": f"07700900{n % 1000:03d}", "to": CALLED, "trunk_name": TRUNK}
        started = time.time()
        async with sim_http.post(f"{self.sim_url}/_sim/calls", json=body) as response:
            response.raise_for_status()
            answer = await response.json()
        record = CallRecord(n, round_no, warmup, str(answer["call_id"]), started, time.time())
        self.records.append(record)
        return record

    async def _decide(self, record: CallRecord) -> None:
        assert record.pk is not None
        assert record.decider is not None
        operator = self.operators[record.decider]
        try:
            started, ended, status, body = await operator.decide(record.pk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            record.error = f"decide request failed: {exc!r}"
            return
        record.decide_started, record.decide_ended, record.http_status = started, ended, status
        if isinstance(body, dict):
            record.decided_status = body.get("status")
            record.pbx_round_trip_ms = body.get("pbx_round_trip_ms")
        if status != 200 or record.decided_status != FINAL:
            record.error = f"decide answered HTTP {status}: {str(body)[:200]}"

    async def _fill_offered_at(self, sim_http: aiohttp.ClientSession) -> None:
        async with sim_http.get(f"{self.sim_url}/_sim/calls") as response:
            calls = {c["call_id"]: c for c in (await response.json())["calls"]}
        for record in self.records:
            record.offered_at = calls.get(record.call_id, {}).get("offered_at")

    def _results(self) -> dict[str, Any]:
        timeout_ms = self.config.timeout * 1000
        push: list[float] = []
        push_from_inject: list[float] = []
        inject_http: list[float] = []
        send_offset: list[float] = []
        decide_http: list[float] = []
        decide_pbx: list[float] = []
        others: list[float] = []
        all_others: list[float] = []
        push_lost = others_lost = 0
        measured = [r for r in self.records if not r.warmup]
        for record in measured:
            inject_http.append((record.inject_ended - record.inject_started) * 1000)
            if record.offered_at is not None:
                send_offset.append((record.offered_at - record.inject_started) * 1000)
            seen = self.tracker.sightings(record.call_id, PENDING)
            for op in range(len(self.operators)):
                at = seen.get(op)
                if at is None or (at - record.inject_started) * 1000 > timeout_ms:
                    push_lost += 1
                    continue
                push_from_inject.append((at - record.inject_started) * 1000)
                if record.offered_at is not None:
                    record.push_ms[op] = round((at - record.offered_at) * 1000, 3)
                    push.append(record.push_ms[op])
            if record.decide_started is None or record.decide_ended is None:
                continue
            decide_http.append((record.decide_ended - record.decide_started) * 1000)
            if isinstance(record.pbx_round_trip_ms, int | float):
                decide_pbx.append(float(record.pbx_round_trip_ms))
            final = self.tracker.sightings(record.call_id, FINAL)
            call_lost = 0
            for op in range(len(self.operators)):
                at = final.get(op)
                late = at is None or (at - record.decide_started) * 1000 > timeout_ms
                if op == record.decider:
                    continue
                if late:
                    call_lost += 1
                    continue
                assert at is not None
                record.final_ms[op] = round((at - record.decide_started) * 1000, 3)
                others.append(record.final_ms[op])
            others_lost += call_lost
            if record.final_ms and not call_lost:
                all_others.append(max(record.final_ms.values()))
        return {
            "results": {
                "push": summarize(push, lost=push_lost),
                "push_from_inject": summarize(push_from_inject, lost=push_lost),
                "inject_http": summarize(inject_http),
                "sim_send_after_inject_start": summarize(send_offset),
                "decide_http": summarize(decide_http),
                "decide_pbx_round_trip": summarize(decide_pbx),
                "decide_others_seen": summarize(others, lost=others_lost),
                "decide_all_others_seen": summarize(all_others),
            },
            "errors": {
                "decide_failures": sum(1 for r in measured if r.error),
                "messages": [f"call {r.n}: {r.error}" for r in measured if r.error][:20],
                "seq_gaps": sum(op.seq_gaps for op in self.operators),
                "frames_received": sum(op.frames for op in self.operators),
            },
            "calls": [asdict(r) for r in self.records],
        }
