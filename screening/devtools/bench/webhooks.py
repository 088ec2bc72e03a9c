"""The suite's ``webhooks`` part: how long an event takes from its state change to the receiver.

One deployment of the setup with ``webhook_endpoints`` endpoints (every event type; 1 by default,
0 to time the same calls without webhooks) at a receiver in this worker (a threaded
``http.server`` answering 200 at once). Calls arrive at ``webhook_rate`` per
second for ``webhook_seconds``; nobody decides them, so each makes ``call.received``, then
``call.expired`` at its deadline and the PBX's ``call.outcome_confirmed``. Per event: the
receiver's arrival time minus the event's ``created`` (the audit row's time, taken inside the state
change's transaction just before it commits: so the figure includes the rest of that transaction,
an upper bound for commit → receiver). Both stamps are ``time.time()`` on one machine.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from screening.devtools.bench import harness
from screening.devtools.bench.stats import summarize

if TYPE_CHECKING:
    from screening.devtools.bench.suite import SuiteConfig

DRAIN_TIMEOUT_S = 120.0  # at most, after the last call
QUIET_S = 5.0


class _Receiver:
    def __init__(self) -> None:
        self.arrivals: list[tuple[float, bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                at = time.time()
                with receiver.lock:
                    receiver.arrivals.append((at, raw))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.port = harness.free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run(config: SuiteConfig, workdir: Path) -> dict[str, Any]:
    from screening.devtools.bench.suite import CALLED, TRUNK, deploy
    from screening.models import (
        Call,
        CallStatus,
        DeliveryState,
        WebhookDelivery,
        WebhookEndpoint,
    )

    receiver = _Receiver()
    for n in range(config.webhook_endpoints):  # 0: the same calls with no webhooks (compare)
        url = f"http://127.0.0.1:{receiver.port}/hook/{n}"
        WebhookEndpoint.objects.create(url=url, secret="bench")  # noqa: S106 (a throwaway db)
    deployment = deploy(config, workdir)  # after the endpoint: every process sees it at once
    rate, seconds = config.webhook_rate, config.webhook_seconds
    count = max(1, round(rate * seconds))
    endpoints = config.webhook_endpoints
    print(f"bench: webhooks, {count} calls at {rate:g}/s, {endpoints} endpoints", flush=True)
    http = requests.Session()
    try:
        start = time.monotonic()
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = {"from": f"07800{i:06d}", "to": CALLED, "trunk_name": TRUNK}
            http.post(f"{deployment.sim_url}/_sim/calls", json=body, timeout=5).raise_for_status()
        achieved = (count - 1) / (time.monotonic() - start) if count > 1 else rate
        drain = float(os.environ.get("BENCH_WEBHOOK_DRAIN_S", DRAIN_TIMEOUT_S))
        deadline = time.monotonic() + drain
        undelivered = WebhookDelivery.objects.exclude(state=DeliveryState.DELIVERED)
        quiet = 0  # seconds with every call ended and nothing left to send (late PBX reports)
        while time.monotonic() < deadline and quiet < QUIET_S:
            ended = Call.objects.filter(status=CallStatus.EXPIRED).count() >= count
            quiet = quiet + 0.5 if ended and not undelivered.exists() else 0
            time.sleep(0.5)
    finally:
        deployment.stop()
        receiver.stop()
    by_type: dict[str, list[float]] = {}
    seen: set[str] = set()
    duplicates = 0
    for at, raw in receiver.arrivals:
        event = json.loads(raw)
        if event["id"] in seen:
            duplicates += 1
            continue
        seen.add(event["id"])
        created = datetime.fromisoformat(event["created"]).timestamp()
        by_type.setdefault(event["type"], []).append((at - created) * 1000)
    # Where the time of call.received goes: the call's arrival -> its push (intake, committed
    # and pushed: the "pushed" audit row's time), and that push -> the receiver.
    from screening.models import AuditEvent, AuditKind

    pushed = dict(AuditEvent.objects.filter(kind=AuditKind.PUSHED).values_list("call_id", "at"))
    received_at = dict(
        AuditEvent.objects.filter(kind=AuditKind.RECEIVED).values_list("call_id", "at")
    )
    intake_ms = [
        (pushed[c] - received_at[c]).total_seconds() * 1000 for c in pushed if c in received_at
    ]
    after_push_ms = []
    for at, raw in receiver.arrivals:
        event = json.loads(raw)
        call_id = event["data"].get("call_id")
        if event["type"] == "call.received" and call_id in pushed:
            after_push_ms.append((at - pushed[call_id].timestamp()) * 1000)
    rows = WebhookDelivery.objects.count()
    every = [ms for values in by_type.values() for ms in values]
    return {
        "processes": deployment.web_command,
        "rate": rate,
        "achieved_rate": round(achieved, 1),
        "calls": count,
        "endpoints": endpoints,
        "events": rows,
        "received": len(seen),
        "duplicates": duplicates,
        "not_delivered": undelivered.count(),
        "all": summarize(every, lost=rows - len(seen)),
        "by_type": {t: summarize(v) for t, v in sorted(by_type.items())},
        "intake_to_push": summarize(intake_ms),
        "received_after_push": summarize(after_push_ms),
    }
