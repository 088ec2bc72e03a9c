"""The suite's ``pbxdelay`` part: what the PBX connection set-up costs a decision across a network,
with and without the connection opened when the call arrives (``screening/pbx/preopen.py``).

The simulator speaks TLS (a CA made for the run, ``PBX_VERIFY_TLS`` pointing at it) behind a
proxy that adds ``pbx_delay_ms`` each way (``screening/simulator/netdelay.py``, its own process;
a connection's first bytes also wait out the TCP handshake's round trip). Everything between
pbxscreen and the PBX goes through it: events, tokens, decisions. Two deployments of the setup,
one after the other: ``PBX_PREOPEN_CONNECTIONS=0`` (off) and the default (on).

Per call: the operator's socket shows the card, the operator reads it for ``READ_SECONDS``, then
POSTs accept; measured are POST -> the simulator has the accept (its ``decided_at`` stamp) and the
POST's round trip, in ms and in round trips of the added delay (``2 x pbx_delay_ms``). Calls are
decided one at a time, by an operator on each web process in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import ssl
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import requests

from screening.devtools.bench import harness
from screening.devtools.bench.stats import summarize
from screening.devtools.bench.wsclients import close_clients
from screening.devtools.procs import ChildProcess

if TYPE_CHECKING:
    from screening.devtools.bench.suite import Deployment, SuiteConfig

READ_SECONDS = 0.5  # an operator reading the card before deciding (real ones take seconds)
VARIANTS = (("off", "0"), ("on", "20"))  # PBX_PREOPEN_CONNECTIONS


def start_pbx(config: SuiteConfig, workdir: Path) -> tuple[list[ChildProcess], str, str, Path]:
    """The simulator behind TLS and the delaying proxy in front of it: (processes, the
    simulator's own URL for the bench's control calls, the proxy's URL for pbxscreen, CA)."""
    from screening.devtools.bench.suite import SIM_ARGS, _wait, start_proc

    tls_dir = workdir / "pbx-tls"
    ca = tls_dir / "ca.pem"
    sim_port, proxy_port = harness.free_port(), harness.free_port()
    manage = [sys.executable, "manage.py"]
    tls_args = [*SIM_ARGS, "--tls-dir", str(tls_dir)]
    sim = start_proc(
        "simulator-tls",
        [*manage, "simulate_pbx", "--port", str(sim_port), "--call-rate", "0", *tls_args],
        {},
        workdir,
    )
    procs = [sim]
    try:
        sim_url = f"https://127.0.0.1:{sim_port}"
        _wait(
            "simulator (TLS)",
            lambda: ca.exists() and requests.get(f"{sim_url}/_sim/state", timeout=2, verify=ca).ok,
            procs,
        )
        target = [f"127.0.0.1:{sim_port}", f"{config.pbx_delay_ms:g}"]
        proxy = start_proc(
            "netdelay",
            [sys.executable, "-m", "screening.simulator.netdelay", str(proxy_port), *target],
            {},
            workdir,
        )
        procs.append(proxy)
        _wait("delaying proxy", lambda: b"netdelay listening" in proxy.log_path.read_bytes(), procs)
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    return procs, sim_url, f"https://127.0.0.1:{proxy_port}", ca


def handshakes(proxy_log: Path) -> int:
    """Connections the delaying proxy has carried so far (it logs one line per connection)."""
    return proxy_log.read_bytes().count(b"connection ")


async def measure(
    config: SuiteConfig,
    deployment: Deployment,
    sessions: list[str],
    ca: Path,
    proxy_log: Path,
    workdir: Path,
) -> dict[str, Any]:
    from screening.devtools.bench.suite import PENDING, Suite, open_operators

    deciders = len(deployment.web_urls)  # one operator on each web process
    pks: dict[str, int] = {}
    shown = asyncio.Event()

    def on_frame(_index: int, _at: float, text: str) -> None:
        if '"type":"call"' not in text[:40]:
            return
        call = json.loads(text)["call"]
        if call["status"] == PENDING:
            pks.setdefault(str(call["call_id"]), call["id"])
            shown.set()

    suite = Suite(config, deployment, sessions, workdir)
    records: list[dict[str, Any]] = []
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=str(ca)))
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30),
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as suite.http:
        clients = await open_operators(deployment, sessions[:deciders], on_frame=on_frame)
        try:
            await asyncio.sleep(0.5)
            for i in range(config.decide_rounds + deciders):  # the first per process warm up
                call_id = await suite.inject()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(config.timeout):
                        while call_id not in pks:
                            shown.clear()
                            await shown.wait()
                await asyncio.sleep(READ_SECONDS)
                before = handshakes(proxy_log)
                record = await suite._post(i % deciders, call_id, pks.get(call_id))
                # Any connection opened while the POST ran was the decision's own.
                cold = handshakes(proxy_log) > before
                records.append({**record, "warmup": i < deciders, "new_connection": cold})
                await asyncio.sleep(0.2)
            offered = await suite.sim_calls()
        finally:
            await close_clients(clients)
    to_pbx: list[float] = []
    round_trip: list[float] = []
    errors = cold = 0
    for record in records:
        if record["warmup"]:
            continue
        cold += record["new_connection"]
        decided_at = offered.get(record["call_id"], {}).get("decided_at")
        if record["status"] != 200 or not decided_at:
            errors += 1
            continue
        to_pbx.append((decided_at - record["started"]) * 1000)
        round_trip.append((record["ended"] - record["started"]) * 1000)
    rtt = 2 * config.pbx_delay_ms
    out: dict[str, Any] = {
        "errors": errors,
        "decisions_on_a_new_connection": cold,
        "post_to_pbx_accept": summarize(to_pbx),
        "post_round_trip": summarize(round_trip),
    }
    for key in ("post_to_pbx_accept", "post_round_trip"):
        out[f"{key}_rtts"] = {
            p: None if out[key][p] is None or not rtt else round(out[key][p] / rtt, 2)
            for p in ("p50", "p99")
        }
    return out


def run(config: SuiteConfig, workdir: Path, sessions: list[str]) -> dict[str, Any]:
    from screening.devtools.bench.suite import deploy

    procs, sim_url, proxy_url, ca = start_pbx(config, workdir)
    out: dict[str, Any] = {
        "delay_ms": config.pbx_delay_ms,
        "read_seconds": READ_SECONDS,
        "rounds": config.decide_rounds,
        "tls": f"{ssl.OPENSSL_VERSION}, Python's default (TLS 1.3)",
    }
    try:
        for name, connections in VARIANTS:
            print(
                f"bench: pbxdelay {name}, {config.pbx_delay_ms:g} ms each way, "
                f"{config.decide_rounds} decisions",
                flush=True,
            )
            env = {
                "PBX_BASE_URL": proxy_url,
                "PBX_VERIFY_TLS": str(ca),
                "PBX_PREOPEN_CONNECTIONS": connections,
            }
            deployment = deploy(config, workdir, extra_env=env)
            deployment.sim_url = sim_url  # calls injected and read directly, without the delay
            out["processes"] = deployment.web_command
            try:
                gc.collect()
                started = time.monotonic()
                proxy_log = procs[-1].log_path
                out[name] = asyncio.run(
                    measure(config, deployment, sessions, ca, proxy_log, workdir)
                )
                out[name]["seconds"] = round(time.monotonic() - started, 1)
            except BaseException:
                for proc in [*deployment.web, *deployment.others, *procs]:
                    print(f"bench: {proc.name} log tail:\n{proc.tail()}", file=sys.stderr)
                raise
            finally:
                deployment.stop()
    finally:
        for proc in procs:
            proc.stop()
    return out
