"""The soak worker: runs with DATABASE_URL already pointing at its own throw-away database.

Process tree: this worker -> the PBX simulator (`simulate_pbx`), `pbx_listen`, N `serve` (listener
off), all on PostgreSQL + Redis. The bots, the call generator and the fault driver run here.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import socket
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import requests

from screening.devtools.procs import ChildProcess, start_manage

TRUNK_NAMES = ("peer-to-41", "register-bt", "sip-gamma")
UNSCREENED_TRUNK = "sip-gamma"  # screening off: exercises the trunk-policy path too


@dataclass
class Options:
    minutes: float
    operators: int
    call_rate: float
    faults: bool
    seed: int
    web: int
    workdir: str
    window: float = 10.0
    log_level: str = "WARNING"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[ChildProcess] = []

    def start(self, name: str, env: dict[str, str], *args: str) -> ChildProcess:
        child = start_manage(name, list(args), env=env, log_dir=self.workdir)
        self.started.append(child)
        return child

    def check_alive(self) -> list[str]:
        # A clean exit (0) is not a death: only a non-zero return code is reported.
        return [
            f"{c.name} exited with {c.process.returncode}" for c in self.started if c.process.poll()
        ]

    def stop(self) -> None:
        # Signal everyone first (newest first, the web processes before the listener and the
        # simulator), then reap: the shutdowns overlap instead of taking 10 s each in turn.
        for child in reversed(self.started):
            if child.alive():
                child.process.terminate()
        for child in self.started:
            child.wait_or_kill()

    def tails(self, lines: int = 30) -> str:
        out = []
        for child in self.started:
            text = child.log().splitlines()[-lines:]
            out.append(f"--- {child.name} ({child.log_path})\n" + "\n".join(text))
        return "\n".join(out)


def wait_http(url: str, ok: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ok(requests.get(url, timeout=2)):
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:g} s ({url})")


def prepare(options: Options) -> list[Any]:
    """Migrate, roles, operators with sessions, trunks. Returns the bots' credentials."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.core.management import call_command

    from screening.calls.roles import setup_roles
    from screening.devtools.soak.bots import login
    from screening.models import Trunk

    call_command("migrate", interactive=False, verbosity=0)
    setup_roles()
    operators = Group.objects.get(name="Operators")
    for name in TRUNK_NAMES:
        Trunk.objects.get_or_create(
            name=name,
            defaults={"label": name, "screening_enabled": name != UNSCREENED_TRUNK},
        )
    credentials = []
    for i in range(options.operators):
        user = get_user_model().objects.create_user(f"bot{i:03d}", first_name=f"Bot{i}")
        user.groups.add(operators)
        credentials.append(login(user))
    return credentials


async def generate_calls(sim_url: str, rate: float, until: float, rng: random.Random) -> int:
    """Poisson arrivals; ~10% of callers hang up while held; a small pool of repeat callers."""
    callers = [f"0770090{rng.randrange(10_000):04d}" for _ in range(40)]
    sent = 0
    async with aiohttp.ClientSession() as http:
        while True:
            await asyncio.sleep(rng.expovariate(rate))
            if time.time() >= until:
                return sent
            body: dict[str, Any] = {
                "from": rng.choice(callers),
                "to": "02079460000",
                "trunk_name": rng.choices(TRUNK_NAMES, weights=(6, 3, 1))[0],
            }
            if rng.random() < 0.1:
                body["hangup_after"] = rng.uniform(0.5, 9.0)
            try:
                async with http.post(f"{sim_url}/_sim/calls", json=body) as response:
                    sent += response.status == 201
            except aiohttp.ClientError:
                pass


async def drive(options: Options, credentials: list[Any], urls: list[str], sim_url: str) -> dict:
    from screening.devtools.soak.bots import Crowd, Operator, Persona
    from screening.devtools.soak.faults import FaultDriver

    rng = random.Random(options.seed)  # noqa: S311 (repeatable load, not security)
    # About two operators go for each call; a fifth never decide; some are slow (too late).
    deciders = max(1, round(options.operators * 0.8))
    probability = min(1.0, 2.0 / deciders)
    ops = []
    for i, creds in enumerate(credentials):
        if i % 5 == 4:
            persona = Persona(decides=False)
        elif i % 7 == 3:
            persona = Persona(probability=probability, delay_median=7.0, delay_sigma=0.4)
        else:
            persona = Persona(probability=probability)
        # A proxy spreads the browsers; a browser that loses its server lands on another one.
        order = urls[i % len(urls) :] + urls[: i % len(urls)]
        ops.append(Operator(f"bot{i:03d}", order, creds, persona=persona, seed=options.seed + i))
    crowd = Crowd(ops)
    crowd.start()
    try:
        await crowd.connected(within=60)
        print(f"soak: {len(ops)} operators connected", flush=True)
        started = time.time()
        until = started + options.minutes * 60
        tasks = [asyncio.ensure_future(generate_calls(sim_url, options.call_rate, until, rng))]
        driver = FaultDriver(sim_url, rng, interval=max(4.0, min(20.0, options.minutes * 60 / 6)))
        if options.faults:
            tasks.append(asyncio.ensure_future(driver.run(until)))
        results = await asyncio.gather(*tasks)
        await driver.clear()
        print(f"soak: generated {results[0]} calls in {time.time() - started:.0f} s", flush=True)
        await drain(sim_url, options.window)
    finally:
        await crowd.stop()
    return {
        "injected": [asdict(f) for f in driver.injected],
        "decisions": [asdict(d) for op in ops for d in op.decisions],
        "bots": {
            "connects": sum(op.connects for op in ops),
            "snapshots": sum(op.snapshots for op in ops),
            "seq_gaps": sum(op.gaps for op in ops),
        },
    }


async def drain(sim_url: str, window: float) -> None:
    """Wait for every call to end at the PBX, every open call to finish here and every outage
    window to be reconciled (its missed calls recorded as unscreened)."""
    from screening.models import OPEN_STATUSES, Call, LinkOutage

    def unfinished() -> int:
        still_open = Call.objects.filter(status__in=OPEN_STATUSES).count()
        windows = LinkOutage.objects.filter(reconciled_at__isnull=True).count()
        return still_open + windows

    deadline = time.monotonic() + window + 45  # a stuck decision is swept after 30 s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(f"{sim_url}/_sim/state") as response:
                live_calls = (await response.json())["live_calls"]
            left = await asyncio.to_thread(unfinished)
            if not live_calls and not left:
                await asyncio.sleep(1.0)  # late 30011/30012 and pushes
                return
            await asyncio.sleep(0.25)


def summarize(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"n={len(values)} min={min(values) * 1000:.0f} ms "
        f"median={statistics.median(values) * 1000:.0f} ms max={max(values) * 1000:.0f} ms"
    )


def run(options: Options) -> int:
    from django.conf import settings

    from screening.devtools.soak import invariants

    workdir = Path(options.workdir)
    print(f"soak: preparing the database ({settings.DATABASES['default']['NAME']})", flush=True)
    credentials = prepare(options)
    procs = Processes(workdir)
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    client_id, client_secret = "soak-client", f"soak-secret-{secrets.token_hex(8)}"
    env = {
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "REDIS_URL": settings.REDIS_URL,
        "PBX_BASE_URL": sim_url,
        "PBX_CLIENT_ID": client_id,
        "PBX_CLIENT_SECRET": client_secret,
        "SCREEN_WINDOW_SECONDS": str(options.window),
        "PBX_HEARTBEAT_SECONDS": "2",
        "LOG_LEVEL": options.log_level,
        "DEBUG": "false",
    }
    started = time.time()
    try:
        procs.start(
            "simulator",
            {**env, "LOG_LEVEL": "WARNING"},
            "simulate_pbx",
            "--port",
            str(sim_port),
            "--call-rate",
            "0",
            "--window",
            str(options.window),
            "--client-id",
            client_id,
            "--client-secret",
            client_secret,
            "--seed",
            str(options.seed),
        )
        wait_http(f"{sim_url}/_sim/state", lambda r: r.ok, "the PBX simulator")
        procs.start("pbx_listen", env, "pbx_listen")
        urls = []
        for i in range(options.web):
            port = free_port()
            procs.start(f"serve-{i}", {**env, "PBX_LISTENER": "off"}, "serve", "--port", str(port))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_http(
                f"{url}/healthz",
                lambda r: r.json()["pbx_link"]["state"] == "up",
                f"serve {url} with the PBX link up",
            )
        print(f"soak: simulator {sim_url}, pbx_listen, serve {' '.join(urls)}", flush=True)
        print(
            f"soak: {options.minutes:g} min, {options.operators} operators, "
            f"{options.call_rate:g} calls/s, faults {'on' if options.faults else 'off'}",
            flush=True,
        )
        driven = asyncio.run(drive(options, credentials, urls, sim_url))
        died = procs.check_alive()
        sim_calls = requests.get(f"{sim_url}/_sim/calls", timeout=30).json()["calls"]
        sim_log = requests.get(f"{sim_url}/_sim/log", timeout=30).json()["entries"]
        live_tokens = requests.get(f"{sim_url}/_sim/tokens", timeout=10).json()["live"]
    except BaseException:
        print(procs.tails(), flush=True)
        raise
    finally:
        procs.stop()
    grants = [f["token_grants"] for f in driven["injected"] if f["token_grants"] is not None]
    verdict = invariants.check(
        sim_calls, sim_log, live_tokens=live_tokens, token_grants_per_revocation=grants
    )
    verdict.violations.extend(f"process {d}" for d in died)
    report = {
        "options": asdict(options),
        "seconds": round(time.time() - started, 1),
        "counts": verdict.counts,
        "bots": driven["bots"],
        "operator_answers": _answers(driven["decisions"]),
        "faults": driven["injected"],
        "violations": verdict.violations,
        "notes": verdict.notes,
    }
    (workdir / "soak-report.json").write_text(json.dumps(report, indent=2, default=str))
    _print(report)
    if verdict.violations:
        print(procs.tails(), flush=True)
    return 0 if verdict.ok else 1


def _answers(decisions: list[dict[str, Any]]) -> dict[str, int]:
    answers: dict[str, int] = {}
    for d in decisions:
        key = f"HTTP {d['http_status']} {d['status']}".strip()
        answers[key] = answers.get(key, 0) + 1
    return dict(sorted(answers.items()))


def _print(report: dict[str, Any]) -> None:
    counts = report["counts"]
    print("\n=== soak report ===")
    print(f"duration: {report['seconds']} s (setup, run and drain)")
    print(
        f"calls offered by the PBX: {counts['offered']}; screened: {counts['screened']}; "
        f"unscreened (offered while the link was down, recorded afterwards): "
        f"{counts['unscreened']}; missing: {counts['missing']}"
    )
    print(
        f"delivered to pbxscreen: {counts['delivered']}; offered while the link was down: "
        f"{counts['not_delivered_link_down']} (of which on a trunk not screened, not recorded: "
        f"{counts['not_screened_link_down']})"
    )
    print(f"recorded outcomes: {counts['outcomes']}")
    print(f"decided by: {counts['decided_by']}")
    print(f"PBX's own record: {counts['pbx_outcomes']}")
    print(
        f"PBX decision requests: {counts['pbx_decision_requests']} "
        f"(answers {counts['pbx_decision_answers']}); token requests: {counts['token_requests']}"
        f", live tokens at the end: {counts['live_tokens_at_end']}"
    )
    print(f"operator decision answers: {report['operator_answers']}")
    print(f"bots: {report['bots']}")
    by_kind: dict[str, list[float]] = {}
    unrecovered: dict[str, int] = {}
    for fault in report["faults"]:
        if fault["recovery_s"] is None:
            unrecovered[fault["kind"]] = unrecovered.get(fault["kind"], 0) + 1
        else:
            by_kind.setdefault(fault["kind"], []).append(fault["recovery_s"])
    print(f"faults injected: {len(report['faults'])}")
    for kind, values in sorted(by_kind.items()):
        print(f"  recovery {kind}: {summarize(values)}")
    for kind, n in sorted(unrecovered.items()):
        print(f"  {kind}: {n} without a measurable recovery (no decision followed in 15 s)")
    for note in report["notes"]:
        print(f"note: {note}")
    print(f"violations: {len(report['violations'])}")
    for violation in report["violations"][:30]:
        print(f"  VIOLATION {violation}")
    print("=== end ===", flush=True)
