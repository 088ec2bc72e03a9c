"""The full benchmark suite (``manage.py bench --suite``), for one setup per worker process.

Per setup (``embedded``: one ``serve`` process, in-memory layer, SQLite; ``scaleout``: Redis layer,
PostgreSQL, two web processes with the operators split between them and one ``pbx_listen``):

1. push: the simulator's send stamp -> each of N operator sockets has the call *pending*; and the
   floor, the same N clients on a raw ``websockets`` broadcast server, right after, same payload;
2. decide: POST accept -> the simulator has ``accept_inbound`` (its own ``decided_at`` stamp) and
   -> the other operators see *accepted*, with 1 and 20 concurrent deciders; the server's share is
   the POST round trip minus the server's own ``pbx_round_trip_ms``. Then the same rounds against
   the decision floor (``decide_floor.py``) in the same run, each figure's p50 and p99 as a ratio
   to it, and the CPU per decided call of every process, split by stage (``cpu.py``);
3. throughput: a short ramp of call rates with 200 operators, until push p99 > 100 ms or a loss;
4. memory: the web processes' RSS before and with the largest N connected;
5. login: decisions while a flood of logins comes in, from one address and from many
   (``loginflood.py``).

The simulator and the floor run as their own processes, so the N clients in this process do not
share a GIL with them. Every stamp is ``time.time()`` on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import requests
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore
from django.core.management import call_command
from django.db import transaction

from screening.calls.roles import setup_roles
from screening.devtools.bench import cpu, harness
from screening.devtools.bench.stats import summarize
from screening.devtools.bench.wsclients import Client, close_clients, open_clients, raise_fd_limit
from screening.devtools.procs import ChildProcess

PENDING, FINAL = "pending", "accepted"
TRUNK, CALLED = "peer-to-41", "02079460000"
SIM_ID, SIM_SECRET = "pbxscreen-bench", "pbxscreen-bench-secret"
CSRF = "benchcsrftokenbenchcsrftoken0123"  # 32 chars: Django accepts an unmasked secret
SIM_ARGS = ("--client-id", SIM_ID, "--client-secret", SIM_SECRET)
P99_LIMIT_MS = 100.0
DECIDE_FIGURES = (
    "post_round_trip",
    "post_to_pbx_accept",
    "post_to_others_see_outcome",
    "server_share",
)


@dataclass
class SuiteConfig:
    setup: str
    sizes: list[int]
    parts: list[str]
    push_calls: int = 20
    decide_operators: int = 20
    decide_concurrency: list[int] = field(default_factory=lambda: [1, 20])
    decide_rounds: int = 10
    idle_seconds: float = 3.0  # how long the decide part watches the processes at rest (CPU)
    # After a decision the simulator rings (up to 1.5 s), talks (up to 5 s), then sends the CDR:
    # the CPU window opens and closes this long after the rounds, so each follow-up event counted
    # belongs to a measured call.
    settle_seconds: float = 7.0
    throughput_operators: int = 200
    rates: list[float] = field(default_factory=lambda: [5, 10, 20, 30, 40, 60])
    step_seconds: float = 5.0
    login_rounds: int = 20
    login_flood: int = 40
    timeout: float = 5.0
    log_level: str = "WARNING"
    # the lookups part (lookups.py): operators, and the answering lookup server's delay
    lookup_operators: int = 100
    lookup_delay_ms: int = 200
    # card, push_context (screening/devtools/bench/card.py)
    card_calls: int = 1_000_000
    card_reads: int = 2000
    context_operators: int = 100
    # intake (screening/devtools/bench/intake.py): calls with the audit chain, and as many without
    intake_calls: int = 1000
    # webhooks (screening/devtools/bench/webhooks.py): calls per second, for how long
    webhook_rate: float = 10.0
    webhook_seconds: float = 60.0
    webhook_endpoints: int = 1
    # pbxdelay (screening/devtools/bench/pbxdelay.py): network delay added each way to the PBX
    pbx_delay_ms: float = 40.0

    @property
    def max_operators(self) -> int:
        wanted = list(self.sizes)
        if "decide" in self.parts or "login" in self.parts:
            wanted.append(self.decide_operators)
        if "throughput" in self.parts:
            wanted.append(self.throughput_operators)
        if "lookups" in self.parts:
            wanted.append(self.lookup_operators)
        if "push_context" in self.parts:
            wanted.append(self.context_operators)
        return max(wanted)

    @property
    def needs_server(self) -> bool:
        """Whether a part runs on the suite's own deployment (card reads the database directly;
        lookups starts deployments of its own)."""
        return bool(set(self.parts) - {"card", "lookups", "intake", "webhooks", "pbxdelay"})


# --- processes ------------------------------------------------------------------------------


def start_proc(name: str, cmd: list[str], env: dict[str, str], workdir: Path) -> ChildProcess:
    # Not always manage.py: the floor and plain daphne run as modules.
    return ChildProcess.start(name, cmd, env=env, log_path=workdir / f"{name}.log")


def _wait(what: str, ready: Any, procs: Iterable[ChildProcess], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check()
        with contextlib.suppress(requests.RequestException, ValueError, KeyError):
            if ready():
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready in {timeout:g} s")


def _serve_has_no_listener_flag() -> bool:
    from screening.management.commands.serve import Command

    parser = Command().create_parser("manage.py", "serve")
    return any("--no-listener" in action.option_strings for action in parser._actions)


@dataclass
class Deployment:
    sim_url: str
    web_urls: list[str]
    web: list[ChildProcess]
    others: list[ChildProcess]
    web_command: str
    listener_metrics_url: str | None = None  # the scale-out pbx_listen's /metrics

    def cpu_targets(self) -> list[cpu.Target]:
        """The processes whose CPU the decide part reads: the server's, then the simulator."""
        targets = [
            cpu.Target(p.name, "server", p.process.pid, f"{url}/metrics")
            for p, url in zip(self.web, self.web_urls, strict=True)
        ]
        for proc in self.others:
            if proc.name == "listener":
                targets.append(
                    cpu.Target(proc.name, "server", proc.process.pid, self.listener_metrics_url)
                )
            else:
                targets.append(cpu.Target(proc.name, proc.name, proc.process.pid))
        return targets

    def stop(self) -> None:
        for proc in [*self.web, *self.others]:
            proc.stop()

    def rss_kb(self) -> int:
        return sum(p.rss_kb() for p in self.web)


def deploy(
    config: SuiteConfig, workdir: Path, extra_env: dict[str, str] | None = None
) -> Deployment:
    manage = [sys.executable, "manage.py"]
    sim_port = harness.free_port()
    sim = start_proc(
        "simulator",
        [*manage, "simulate_pbx", "--port", str(sim_port), "--call-rate", "0", *SIM_ARGS],
        {},
        workdir,
    )
    procs = [sim]
    sim_url = f"http://127.0.0.1:{sim_port}"
    try:
        _wait("simulator", lambda: requests.get(f"{sim_url}/_sim/state", timeout=2).ok, procs)
        env = {
            "DEBUG": "false",
            "LOG_LEVEL": config.log_level,
            "PBX_BASE_URL": sim_url,
            "PBX_CLIENT_ID": SIM_ID,
            "PBX_CLIENT_SECRET": SIM_SECRET,
            "PBX_EVENTS": "websocket",
            **(extra_env or {}),
        }
        if "login" in config.parts:
            # The login flood comes "from many addresses" through X-Forwarded-For, as via nginx.
            env["PROXY_HEADERS"] = "true"
        web: list[ChildProcess] = []
        listener_metrics = None
        if config.setup == "embedded":
            port = harness.free_port()
            web.append(start_proc("web-1", [*manage, "serve", "--port", str(port)], env, workdir))
            ports, how = [port], "manage.py serve (listener inside)"
        else:
            env["REDIS_URL"] = harness.REDIS_BENCH_URL
            harness.flush_redis(harness.REDIS_BENCH_URL)
            metrics_port = harness.free_port()
            listen = [*manage, "pbx_listen", "--metrics-port", str(metrics_port)]
            procs.append(start_proc("listener", listen, env, workdir))
            listener_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            ports = [harness.free_port(), harness.free_port()]
            no_listener = _serve_has_no_listener_flag()
            for i, port in enumerate(ports, 1):
                if no_listener:
                    cmd = [*manage, "serve", "--no-listener", "--port", str(port)]
                else:
                    cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
                    cmd.append("pbxscreen.asgi:application")
                web.append(start_proc(f"web-{i}", cmd, env, workdir))
            how = "2 x " + (
                "manage.py serve --no-listener" if no_listener else "daphne pbxscreen.asgi"
            )
            how += " + manage.py pbx_listen"
        urls = [f"http://127.0.0.1:{p}" for p in ports]

        def linked() -> bool:
            states = [requests.get(f"{u}/healthz", timeout=2).json() for u in urls]
            return all(s["pbx_link"]["state"] == "up" for s in states)

        _wait("web processes linked to the PBX", linked, [*procs, *web])
        return Deployment(sim_url, urls, web, procs, how, listener_metrics)
    except BaseException:
        for proc in procs:
            print(f"bench: {proc.name} log tail:\n{proc.tail()}", file=sys.stderr)
            proc.stop()
        raise


def start_floor(workdir: Path) -> tuple[ChildProcess, str]:
    port = harness.free_port()
    floor = start_proc(
        "floor", [sys.executable, "-m", "screening.devtools.bench.floor", str(port)], {}, workdir
    )

    def up() -> bool:
        return b"floor listening" in floor.log_path.read_bytes()

    _wait("floor server", up, [floor])
    return floor, f"ws://127.0.0.1:{port}"


@dataclass
class DecideFloor:
    proc: ChildProcess
    url: str  # HTTP: the decisions and the control requests
    ws_url: str  # the operators' sockets


def start_decide_floor(workdir: Path, sim_url: str) -> DecideFloor:
    """The decision floor (decide_floor.py) on the setup's database (``DATABASE_URL``) and PBX."""
    port, ws_port = harness.free_port(), harness.free_port()
    cmd = [sys.executable, "-m", "screening.devtools.bench.decide_floor", str(port), str(ws_port)]
    floor = start_proc("decide-floor", [*cmd, sim_url, SIM_ID, SIM_SECRET], {}, workdir)

    def up() -> bool:
        return b"decide floor listening" in floor.log_path.read_bytes()

    _wait("decision floor", up, [floor])
    return DecideFloor(floor, f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{ws_port}")


# --- operators ------------------------------------------------------------------------------


def make_sessions(count: int) -> list[str]:
    """Migrate, then make ``count`` operators with a logged-in session each (fast, in bulk)."""
    call_command("migrate", interactive=False, verbosity=0)
    setup_roles()
    group = Group.objects.get(name="Operators")
    user_model = get_user_model()
    sessions: list[str] = []
    with transaction.atomic():
        users = []
        for i in range(count):
            user = user_model(username=f"bench-op{i:04d}", first_name=f"Bench{i:04d}")
            user.set_unusable_password()
            users.append(user)
        user_model.objects.bulk_create(users)
        users = list(user_model.objects.filter(username__startswith="bench-op").order_by("pk"))
        group.user_set.add(*users)
        for user in users:
            store = SessionStore()
            store[SESSION_KEY] = str(user.pk)
            store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]  # as a login stores
            store[HASH_SESSION_KEY] = user.get_session_auth_hash()
            store.create()
            sessions.append(str(store.session_key))
    return sessions


async def open_operators(
    deployment: Deployment, sessions: list[str], on_frame: Any = None
) -> list[Client]:
    urls, headers, origins = [], [], []
    for i, session in enumerate(sessions):
        base = deployment.web_urls[i % len(deployment.web_urls)]  # split between processes
        urls.append(base.replace("http", "ws", 1) + "/ws/operator/")
        headers.append({"Cookie": f"sessionid={session}"})
        origins.append(base)  # each process is its own origin (scheme, host and port)
    return await open_clients(urls, headers, origins, expect_snapshot=True, on_frame=on_frame)


def first_sightings(
    clients: list[Client], status: str, since: dict[int, int] | None = None
) -> dict[str, dict[int, float]]:
    """call_id -> {client: first time it was seen in ``status``}."""
    seen: dict[str, dict[int, float]] = {}
    for client in clients:
        for at, body in client.parsed((since or {}).get(client.index, 0)):
            call = body.get("call")
            if body.get("type") == "call" and isinstance(call, dict) and call["status"] == status:
                seen.setdefault(str(call["call_id"]), {}).setdefault(client.index, at)
    return seen


def latencies(
    sent: dict[str, float], seen: dict[str, dict[int, float]], clients: int, timeout_ms: float
) -> tuple[list[float], int]:
    samples, lost = [], 0
    for call_id, stamp in sent.items():
        by_client = seen.get(call_id, {})
        for i in range(clients):
            at = by_client.get(i)
            if at is None or (at - stamp) * 1000 > timeout_ms:
                lost += 1
            else:
                samples.append((at - stamp) * 1000)
    return samples, lost


# --- the parts ------------------------------------------------------------------------------


class Suite:
    def __init__(
        self, config: SuiteConfig, deployment: Deployment, sessions: list[str], workdir: Path
    ) -> None:
        self.config = config
        self.workdir = workdir
        self.dep = deployment
        self.sessions = sessions
        self.http: aiohttp.ClientSession
        self.sample_payload = ""
        self.injected = 0
        self.quiet_at = 0.0  # monotonic time when the push calls made so far have all expired
        self.callers: list[str] = []  # when set, calls come from these numbers (push_context)
        self.context_callers: list[str] = []
        self.decide_template = ""  # a product push of an accepted call, for the decision floor
        self.floor_channels: dict[str, str] = {}

    async def inject(self) -> str:
        return (await self.inject_held())[0]

    async def inject_held(self) -> tuple[str, str]:
        """A call offered at the simulator: its call id and the channel id the PBX holds."""
        self.injected += 1
        caller = (
            self.callers[self.injected % len(self.callers)]
            if self.callers
            else f"07700{self.injected:06d}"
        )
        body = {"from": caller, "to": CALLED, "trunk_name": TRUNK}
        async with self.http.post(f"{self.dep.sim_url}/_sim/calls", json=body) as response:
            response.raise_for_status()
            answer = await response.json()
        return str(answer["call_id"]), str(answer["channel_id"])

    async def sim_calls(self) -> dict[str, dict[str, Any]]:
        async with self.http.get(f"{self.dep.sim_url}/_sim/calls") as response:
            return {c["call_id"]: c for c in (await response.json())["calls"]}

    def gap(self, n: int) -> float:
        return 0.25 + n / 1000  # leaves the previous broadcast time to finish

    async def run(self, floor_url: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30),
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
        ) as self.http:
            # Memory first, on a server that has not held a connection yet (RSS never shrinks).
            if "memory" in self.config.parts:
                out["memory"] = await self.memory(max(self.config.sizes))
                _collect()
            if "push" in self.config.parts:
                out["push"] = {}
                for n in self.config.sizes:
                    out["push"][str(n)] = await self.push(n, floor_url)
                    _collect()
            if "push_context" in self.config.parts:
                out["push_context"] = await self.push_context(self.config.context_operators)
                _collect()
            if "decide" in self.config.parts:
                out["decide"] = await self.decide_part()
            if "throughput" in self.config.parts:
                out["throughput"] = await self.throughput()
                _collect()
            if "login" in self.config.parts:  # last: its flood locks the bench's address out
                from screening.devtools.bench import loginflood

                out["login"] = await loginflood.run(self)
        return out

    async def push(self, n: int, floor_url: str | None, inspect: Any = None) -> dict[str, Any]:
        """``inspect(clients, call_ids, offered)``, if given, sees the frames before the clients
        close (``offered``: the simulator's calls, with their send stamps)."""
        cfg = self.config
        print(f"bench: push, {n} operators, {cfg.push_calls} calls", flush=True)
        # The previous size's calls expire (and push) 10 s after they came: not on top of these.
        await asyncio.sleep(max(0.0, self.quiet_at - time.monotonic()))
        clients = await open_operators(self.dep, self.sessions[:n])
        try:
            await asyncio.sleep(0.5)
            await self.inject()  # warm-up, not counted: first-send costs on fresh connections
            await asyncio.sleep(self.gap(n))
            ids = []
            # One broadcast at a time, as on the floor: a batch of calls fits in the screening
            # window, and the next batch starts once the last call of this one has expired (the
            # expiry pushes would otherwise land on top of later calls' pushes).
            window = float(settings.SCREEN_WINDOW_SECONDS)
            batch = max(1, int((window - 1.0) / self.gap(n)))
            for i in range(cfg.push_calls):
                if i and i % batch == 0:
                    await asyncio.sleep(window + 0.5 - self.gap(n))
                ids.append(await self.inject())
                self.quiet_at = time.monotonic() + window + 0.5
                await asyncio.sleep(self.gap(n))
            await asyncio.sleep(1.0)
            offered = await self.sim_calls()
            seen = first_sightings(clients, PENDING)
            for client in clients[:1]:
                for _, text in client.frames:
                    if '"status":"pending"' in text:
                        self.sample_payload = text
                        break
            if inspect is not None:
                inspect(clients, ids, offered)
        finally:
            await close_clients(clients)
        sent = {cid: offered[cid]["offered_at"] for cid in ids if cid in offered}
        samples, lost = latencies(sent, seen, n, cfg.timeout * 1000)
        result: dict[str, Any] = {
            "product": summarize(samples, lost=lost),
            # per call: the last operator's latency (ms), to tell a slow broadcast from noise
            "per_call_max_ms": [
                round((max(seen[c].values()) - sent[c]) * 1000, 1) if seen.get(c) else None
                for c in sent
            ],
        }
        if floor_url is not None:
            result["floor"] = await self.floor(n, floor_url)
            fp99, pp99 = result["floor"]["p99"], result["product"]["p99"]
            result["ratio_p99"] = round(pp99 / fp99, 2) if fp99 and pp99 is not None else None
        return result

    async def push_context(self, n: int) -> dict[str, Any]:
        """The push part without and with a full card (contact, notes, precedent), alternating
        twice so drift on a shared machine falls on both."""
        runs: dict[str, list[dict[str, Any]]] = {"plain": [], "context": []}
        for variant in ("plain", "context", "plain", "context"):
            print(f"bench: push_context, {n} operators, {variant}", flush=True)
            self.callers = self.context_callers if variant == "context" else []
            result = await self.push(n, None)
            runs[variant].append(result["product"])
            _collect()
        self.callers = []
        out: dict[str, Any] = {"operators": n, "runs": runs}
        for variant, results in runs.items():
            out[variant] = {
                key: _median([r[key] for r in results if r.get(key) is not None])
                for key in ("p50", "p99", "max")
            }
            out[variant]["lost"] = sum(r.get("lost", 0) for r in results)
        for key in ("p50", "p99"):
            plain, ctx = out["plain"][key], out["context"][key]
            out[f"ratio_{key}"] = round(ctx / plain, 3) if plain and ctx is not None else None
        return out

    async def floor(self, n: int, floor_url: str) -> dict[str, Any]:
        payload = self.sample_payload or json.dumps({"type": "call", "call": {}})
        clients = await open_clients([floor_url + "/"] * n)
        sent: dict[str, float] = {}
        try:
            async with self.http.ws_connect(floor_url + "/control") as control:
                await asyncio.sleep(0.5)
                for k in range(-1, self.config.push_calls):  # -1: the warm-up, not counted
                    call_id = f"floor-{n}-{k:04d}"
                    text = _with_call_id(payload, call_id)
                    await control.send_str(json.dumps({"payload": text}))
                    stamp = json.loads(await control.receive_str())["t"]
                    if k >= 0:
                        sent[call_id] = stamp
                    await asyncio.sleep(self.gap(n))
            await asyncio.sleep(1.0)
            seen = first_sightings(clients, PENDING)
        finally:
            await close_clients(clients)
        samples, lost = latencies(sent, seen, n, self.config.timeout * 1000)
        return summarize(samples, lost=lost)

    async def memory(self, n: int) -> dict[str, Any]:
        print(f"bench: memory, {n} operators", flush=True)
        # Warm the server with one operator first, so the delta is the connections' own cost
        # rather than first-use imports and caches.
        warm = await open_operators(self.dep, self.sessions[:1])
        await asyncio.sleep(0.5)
        await close_clients(warm)
        await asyncio.sleep(0.5)
        before = self.dep.rss_kb()
        clients = await open_operators(self.dep, self.sessions[:n])
        try:
            await asyncio.sleep(2.0)
            with_clients = self.dep.rss_kb()
        finally:
            await close_clients(clients)
        return {
            "operators": n,
            "rss_before_kb": before,
            "rss_connected_kb": with_clients,
            "per_connection_kb": round((with_clients - before) / n, 1),
            "total_per_connection_kb": round(with_clients / n, 1),
        }

    async def decide(self, k: int) -> dict[str, Any]:
        """Rounds of K calls decided at once by K operators of N, on the product; the CPU every
        process spent over the measured rounds, per decided call."""
        n = max(self.config.decide_operators, k)
        rounds = self._decide_rounds(k)
        print(f"bench: decide, {k} concurrent of {n} operators, {rounds} rounds", flush=True)
        tally = _Sightings(n, self.config.timeout)
        targets = self.dep.cpu_targets()
        if self.config.setup == "scaleout":
            pid = await asyncio.to_thread(cpu.redis_pid, harness.REDIS_BENCH_URL)
            if pid is not None:
                targets.append(cpu.Target("redis-server (shared)", "redis", pid))
        meter = cpu.Meter(targets, self._database_pids(product=True))
        clients = await open_operators(self.dep, self.sessions[:n], on_frame=tally.on_frame)
        try:
            await asyncio.sleep(0.5)
            idle = await self._idle(meter)
            records, spent = await self._decide_rounds_on(
                k, rounds, tally, meter, self.inject, self._post
            )
            offered = await self.sim_calls()
        finally:
            await close_clients(clients)
        self.decide_template = self.decide_template or tally.accepted_text
        result = {"operators": n, "concurrent": k, **_decide_figures(records, tally, offered, n)}
        before, after = spent
        result["cpu"] = cpu.per_call(before, after, result["decided"], idle)
        return result

    async def floor_decide(self, k: int, floor: DecideFloor) -> dict[str, Any]:
        """The same rounds against the decision floor (decide_floor.py): same simulator, same
        database engine, same N client sockets, same POSTs."""
        n = max(self.config.decide_operators, k)
        rounds = self._decide_rounds(k)
        print(f"bench: decide floor, {k} concurrent of {n} operators, {rounds} rounds", flush=True)
        tally = _Sightings(n, self.config.timeout)
        product = [t for t in self.dep.cpu_targets() if t.role == "server"]
        targets = [
            cpu.Target("decide-floor", "floor", floor.proc.process.pid),
            *[t for t in self.dep.cpu_targets() if t.role == "simulator"],
            # The product records the injected calls and their follow-up events too (see
            # decide_floor.py): its CPU meanwhile is shown, as interference, not as floor work.
            *[cpu.Target(t.name, "product (interference)", t.pid) for t in product],
        ]
        meter = cpu.Meter(targets, self._database_pids(product=False))
        await self._floor_control(floor, "sessions", {"sessions": self.sessions[:n]})
        if self.decide_template:
            await self._floor_control(floor, "template", {"text": self.decide_template})
        clients = await open_clients([floor.ws_url + "/"] * n, on_frame=tally.on_frame)

        async def inject() -> str:
            call_id, channel_id = await self.inject_held()
            self.floor_channels[call_id] = channel_id
            return call_id

        async def post(decider: int, call_id: str, pk: int | None) -> dict[str, Any]:
            return await self._post(decider, call_id, pk, base=floor.url)

        async def announce(ids: list[str]) -> None:
            # Let the product's listener finish recording these calls before anything is timed.
            await asyncio.sleep(0.2)
            for call_id in ids:
                body = {"call_id": call_id, "channel_id": self.floor_channels[call_id]}
                await self._floor_control(floor, "calls", body)

        try:
            await asyncio.sleep(0.5)
            idle = await self._idle(meter)
            records, spent = await self._decide_rounds_on(
                k, rounds, tally, meter, inject, post, announce
            )
            offered = await self.sim_calls()
        finally:
            await close_clients(clients)
        result = {"operators": n, "concurrent": k, **_decide_figures(records, tally, offered, n)}
        before, after = spent
        result["cpu"] = cpu.per_call(before, after, result["decided"], idle)
        return result

    async def decide_part(self) -> dict[str, Any]:
        """The product's rounds for every K first, then the floor's: the floor's calls, which
        the product records as well, never land in the middle of the product's rounds."""
        out: dict[str, Any] = {}
        for k in self.config.decide_concurrency:
            out[str(k)] = await self.decide(k)
            _collect()
        floor = await asyncio.to_thread(start_decide_floor, self.workdir, self.dep.sim_url)
        try:
            for k in self.config.decide_concurrency:
                row = out[str(k)]
                row["floor"] = await self.floor_decide(k, floor)
                row["ratios"] = {
                    key: {p: _ratio(row[key][p], row["floor"][key][p]) for p in ("p50", "p99")}
                    for key in DECIDE_FIGURES
                }
                mine, theirs = row["cpu"], row["floor"]["cpu"]
                row["ratios"]["cpu_per_call"] = _ratio(
                    mine.get("with_database_per_call_ms"), _floor_cpu_per_call(theirs)
                )
                _collect()
        finally:
            floor.proc.stop()
        return out

    def _decide_rounds(self, k: int) -> int:
        return self.config.decide_rounds if k == 1 else max(1, self.config.decide_rounds // 2)

    async def _idle(self, meter: cpu.Meter) -> dict[str, float]:
        """Each process's CPU per second at rest, over a short quiet spell once the operators'
        connections (their snapshots) are done with."""
        await asyncio.sleep(min(1.0, self.config.idle_seconds))
        before = await meter.abefore()
        await asyncio.sleep(self.config.idle_seconds)
        return cpu.idle_rates(before, await meter.aafter())

    async def _decide_rounds_on(
        self,
        k: int,
        rounds: int,
        tally: _Sightings,
        meter: cpu.Meter,
        inject: Any,
        post: Any,
        announce: Any = None,
    ) -> tuple[list[dict[str, Any]], tuple[cpu.Snapshot, cpu.Snapshot]]:
        """A warm-up round, then ``rounds`` measured ones: inject K calls, wait until every
        operator has them pending, K POSTs at once, wait until everyone sees the outcome. The
        CPU snapshots bracket the measured rounds."""
        records: list[dict[str, Any]] = []
        before = after = None
        for i in range(rounds + 1):  # the first round warms up
            if i == 1:
                await asyncio.sleep(self.config.settle_seconds)  # the warm-up's follow-ups
                before = await meter.abefore()
            ids = [await inject() for _ in range(k)]
            if announce is not None:
                await announce(ids)
            await asyncio.gather(*(tally.wait_all(cid, PENDING) for cid in ids))
            posts = [post(j, cid, tally.pks.get(cid)) for j, cid in enumerate(ids)]
            batch = await asyncio.gather(*posts)
            await asyncio.gather(*(tally.wait_all(cid, FINAL) for cid in ids))
            records.append({"warmup": not records, "calls": batch})
            if i == rounds:
                await asyncio.sleep(self.config.settle_seconds)
                after = await meter.aafter()
            await asyncio.sleep(0.3)
        if before is None or after is None:  # no measured round: an empty window
            before = after = await meter.abefore()
        return records, (before, after)

    def _database_pids(self, *, product: bool) -> Any:
        """The PostgreSQL backends of the product's connections, or of the floor's."""

        def pids() -> list[tuple[str, str, int]]:
            return [b for b in cpu.postgres_backends() if ("(floor)" in b[0]) != product]

        return pids

    async def _floor_control(self, floor: DecideFloor, what: str, body: dict[str, Any]) -> Any:
        async with self.http.post(f"{floor.url}/_floor/{what}", json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def _post(
        self, decider: int, call_id: str, pk: int | None, base: str | None = None
    ) -> dict[str, Any]:
        base = base or self.dep.web_urls[decider % len(self.dep.web_urls)]
        headers = {
            "Cookie": f"sessionid={self.sessions[decider]}; csrftoken={CSRF}",
            "X-CSRFToken": CSRF,
        }
        record: dict[str, Any] = {"call_id": call_id, "decider": decider, "rtt_ms": None}
        started = time.time()
        status = 0
        if pk is not None:
            async with self.http.post(f"{base}/calls/{pk}/accept", headers=headers) as response:
                status = response.status
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None  # not JSON (a proxy's or server's error page): kept by its status
            record["rtt_ms"] = body.get("pbx_round_trip_ms") if isinstance(body, dict) else None
        record.update(started=started, ended=time.time(), status=status)
        return record

    async def throughput(self) -> dict[str, Any]:
        cfg = self.config
        n = cfg.throughput_operators
        clients = await open_operators(self.dep, self.sessions[:n])
        steps: list[dict[str, Any]] = []
        best = 0.0
        try:
            await asyncio.sleep(0.5)
            for rate in cfg.rates:
                print(f"bench: throughput, {n} operators, {rate:g} calls/s", flush=True)
                marks = {c.index: len(c.frames) for c in clients}
                count = max(1, round(rate * cfg.step_seconds))
                start = time.monotonic()
                tasks = []
                for i in range(count):
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(self.inject()))
                spread = time.monotonic() - start
                ids = await asyncio.gather(*tasks)
                await asyncio.sleep(1.0)
                offered = await self.sim_calls()
                seen = first_sightings(clients, PENDING, marks)
                sent = {cid: offered[cid]["offered_at"] for cid in ids if cid in offered}
                samples, lost = latencies(sent, seen, n, P99_LIMIT_MS * 10)
                summary = summarize(samples, lost=lost)
                achieved = (len(ids) - 1) / spread if len(ids) > 1 and spread > 0 else rate
                ok = lost == 0 and summary["p99"] is not None and summary["p99"] <= P99_LIMIT_MS
                steps.append(
                    {"rate": rate, "achieved_rate": round(achieved, 1), "ok": ok, **summary}
                )
                if not ok:
                    break
                best = rate
                await asyncio.sleep(1.0)
        finally:
            await close_clients(clients)
        return {"operators": n, "step_seconds": cfg.step_seconds, "max_rate": best, "steps": steps}


class _Sightings:
    """When each of N clients first saw each (call, status); the pks the pushes carry."""

    def __init__(self, n: int, timeout: float) -> None:
        self.n = n
        self.timeout = timeout
        self.seen: dict[tuple[str, str], dict[int, float]] = {}
        self.pks: dict[str, int] = {}
        self.accepted_text = ""
        self.changed = asyncio.Event()

    def on_frame(self, index: int, at: float, text: str) -> None:
        if '"type":"call"' not in text[:40]:
            return
        call = json.loads(text)["call"]
        self.pks[str(call["call_id"])] = call["id"]
        if call["status"] == FINAL and not self.accepted_text:
            self.accepted_text = text
        self.seen.setdefault((str(call["call_id"]), call["status"]), {}).setdefault(index, at)
        self.changed.set()

    async def wait_all(self, call_id: str, status: str) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                while len(self.seen.get((call_id, status), {})) < self.n:
                    self.changed.clear()
                    await self.changed.wait()


def _decide_figures(
    records: list[dict[str, Any]], tally: _Sightings, offered: dict[str, Any], n: int
) -> dict[str, Any]:
    http, share, to_pbx, others = [], [], [], []
    errors = lost = 0
    for rec in records[1:]:
        for call in rec["calls"]:
            if call["status"] != 200 or call["rtt_ms"] is None:
                errors += 1
                continue
            elapsed = (call["ended"] - call["started"]) * 1000
            http.append(elapsed)
            share.append(elapsed - call["rtt_ms"])
            decided_at = offered.get(call["call_id"], {}).get("decided_at")
            if decided_at:
                to_pbx.append((decided_at - call["started"]) * 1000)
            by_client = tally.seen.get((call["call_id"], FINAL), {})
            for i in range(n):
                if i == call["decider"]:
                    continue
                at = by_client.get(i)
                if at is None:
                    lost += 1
                else:
                    others.append((at - call["started"]) * 1000)
    return {
        "errors": errors,
        "decided": len(http),
        "post_round_trip": summarize(http),
        "post_to_pbx_accept": summarize(to_pbx),
        "post_to_others_see_outcome": summarize(others, lost=lost),
        "server_share": summarize(share),
    }


def _ratio(product: float | None, floor: float | None) -> float | None:
    if product is None or not floor:
        return None
    return round(product / floor, 2)


def _floor_cpu_per_call(figures: dict[str, Any]) -> float | None:
    """The floor's own CPU per decided call (its process and its database backends)."""
    rows = [r for r in figures.get("processes", {}).values() if r["role"] in ("floor", "database")]
    return round(sum(r["per_call_ms"] for r in rows), 3) if rows else None


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _collect() -> None:
    """Collect between measurements, never during them: the N clients' frames are many objects,
    and a full collection in the middle would stall every client's stamps (gc is off meanwhile)."""
    gc.collect()


def _with_call_id(payload: str, call_id: str) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        body = json.loads(payload)
        body["call"]["call_id"] = call_id
        body["call"]["status"] = PENDING
        return json.dumps(body, separators=(",", ":"))
    return json.dumps({"type": "call", "call": {"call_id": call_id, "status": PENDING}})


def run(options: dict[str, Any]) -> dict[str, Any]:
    config = SuiteConfig(**options["suite"])
    workdir = Path(options["workdir"])
    machine = harness.machine_info()
    fd_limit = raise_fd_limit(4 * config.max_operators + 1024)
    print(
        f"bench: {config.setup}: fd limit (soft, hard) = {fd_limit}; "
        f"database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}",
        flush=True,
    )
    started = time.time()
    sessions = make_sessions(config.max_operators)
    measured: dict[str, Any] = {}
    processes = "no server (in process only)"
    if "card" in config.parts:
        from screening.devtools.bench import card

        measured["card"] = card.measure_card(config.card_calls, config.card_reads)
    if "intake" in config.parts:
        from screening.devtools.bench import intake

        measured["intake"] = intake.measure_intake(config.intake_calls)
    if "decide" in config.parts:  # before the servers start: the bench's own cost per stage
        measured["cpu_stage_overhead_us"] = cpu.stage_overhead_us()
    if config.needs_server:
        context_callers: list[str] = []
        if "push_context" in config.parts:
            from screening.devtools.bench import card

            context_callers = card.context_callers(config.push_calls)
        deployment = deploy(config, workdir)
        processes = deployment.web_command
        measured.update(_run_parts(config, deployment, workdir, sessions, context_callers))
    if "webhooks" in config.parts:  # a deployment of its own (webhooks.py)
        from screening.devtools.bench import webhooks

        measured["webhooks"] = webhooks.run(config, workdir)
        if not config.needs_server:
            processes = measured["webhooks"]["processes"]
    if "pbxdelay" in config.parts:  # two deployments of its own (pbxdelay.py)
        from screening.devtools.bench import pbxdelay

        measured["pbxdelay"] = pbxdelay.run(config, workdir, sessions)
        if not config.needs_server:
            processes = measured["pbxdelay"]["processes"]
    if "lookups" in config.parts:  # three deployments of its own (lookups.py)
        from screening.devtools.bench import lookups

        measured["lookups"] = lookups.run(config, workdir, sessions)
        if not config.needs_server:
            processes = measured["lookups"]["processes"]
    return {
        "setup": config.setup,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "fd_limit": list(fd_limit),
        "processes": processes,
        "config": asdict(config),
        **measured,
    }


def _run_parts(
    config: SuiteConfig,
    deployment: Deployment,
    workdir: Path,
    sessions: list[str],
    context_callers: list[str],
) -> dict[str, Any]:
    """The parts on the suite's deployment (all but card and lookups), which this stops."""
    floor: ChildProcess | None = None
    try:
        floor_url = None
        if "push" in config.parts:
            floor, floor_url = start_floor(workdir)
        print(f"bench: {config.setup}: {deployment.web_command}", flush=True)
        gc.collect()
        gc.freeze()  # Django and setup objects: never scanned again
        gc.disable()  # see _collect()
        try:
            suite = Suite(config, deployment, sessions, workdir)
            suite.context_callers = context_callers
            return asyncio.run(suite.run(floor_url))
        finally:
            gc.enable()
    except BaseException:
        for proc in [*deployment.web, *deployment.others]:
            print(f"bench: {proc.name} log tail:\n{proc.tail()}", file=sys.stderr)
        raise
    finally:
        if floor is not None:
            floor.stop()
        deployment.stop()
