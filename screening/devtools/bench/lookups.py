"""The suite's ``lookups`` part: external caller lookups must never delay the push.

Three deployments of the same setup, one after another, each measured with the suite's push
measurement (the simulator's send stamp -> each operator socket has the call *pending*):

a. ``off``: no lookup configured;
b. ``hang``: ``CALLER_LOOKUP_URL`` at a server that accepts the connection and never answers;
c. ``answer``: the same at a server answering ``{"name": ...}`` after ``lookup_delay_ms``; here
   also, per operator and call, the time from the first (nameless) push to the card's update
   with the name (target: at most the budget + 50 ms), and from the simulator's send stamp to
   that update (never less than the server's delay: a check on the measurement itself).

The lookup servers (``screening.devtools.lookup_server``) run as their own processes, so their
threads never share a GIL with the bench's clients. Every call comes from a new number, so no
answer comes from the cache.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from screening.devtools.bench import harness
from screening.devtools.bench.stats import summarize
from screening.devtools.procs import ChildProcess

if TYPE_CHECKING:
    from screening.devtools.bench.suite import SuiteConfig
    from screening.devtools.bench.wsclients import Client

BUDGET_MS = 800
TARGET_SLACK_MS = 50


def start_lookup_server(workdir: Path, name: str, *args: str) -> tuple[ChildProcess, str]:
    from screening.devtools.bench.suite import _wait, start_proc

    port = harness.free_port()
    cmd = [sys.executable, "-m", "screening.devtools.lookup_server", str(port), *args]
    proc = start_proc(name, cmd, {}, workdir)
    _wait(name, lambda: b"listening" in proc.log_path.read_bytes(), [proc])
    return proc, f"http://127.0.0.1:{port}/lookup/{{number}}"


def name_delays(
    clients: list[Client], call_ids: list[str], sent: dict[str, float]
) -> tuple[list[float], list[float], int]:
    """Per operator and call: ms from the first push of the card to its first push with a name,
    and from the simulator's send stamp to that push with a name; and how many (operator, call)
    pairs never got the name."""
    wanted = set(call_ids)
    delays: list[float] = []
    from_send: list[float] = []
    missing = 0
    for client in clients:
        first: dict[str, float] = {}
        named: dict[str, float] = {}
        for at, body in client.parsed():
            call = body.get("call") if body.get("type") == "call" else None
            if not isinstance(call, dict) or str(call.get("call_id")) not in wanted:
                continue
            call_id = str(call["call_id"])
            first.setdefault(call_id, at)
            if call.get("caller_name"):
                named.setdefault(call_id, at)
        for call_id in call_ids:
            if call_id in first and call_id in named:
                delays.append((named[call_id] - first[call_id]) * 1000)
                if call_id in sent:
                    from_send.append((named[call_id] - sent[call_id]) * 1000)
            else:
                missing += 1
    return delays, from_send, missing


async def _push(
    config: SuiteConfig, deployment: Any, sessions: list[str], workdir: Path
) -> dict[str, Any]:
    from screening.devtools.bench.suite import Suite

    suite = Suite(config, deployment, sessions, workdir)
    seen: dict[str, Any] = {}

    def inspect(clients: list[Client], ids: list[str], offered: dict[str, Any]) -> None:
        sent = {c: offered[c]["offered_at"] for c in ids if c in offered}
        seen["names"] = name_delays(clients, ids, sent)

    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30), cookie_jar=aiohttp.DummyCookieJar()
    ) as suite.http:
        result = await suite.push(config.lookup_operators, None, inspect=inspect)
    delays, from_send, missing = seen["names"]
    result["name_after_push"] = summarize(delays, lost=missing)
    result["name_after_send"] = summarize(from_send, lost=missing)
    return result


def run(config: SuiteConfig, workdir: Path, sessions: list[str]) -> dict[str, Any]:
    from screening.devtools.bench.suite import deploy

    delay = config.lookup_delay_ms
    variants: list[tuple[str, tuple[str, ...]]] = [
        ("off", ()),
        ("hang", ("--hang",)),
        ("answer", ("--delay", f"{delay / 1000:g}")),
    ]
    out: dict[str, Any] = {
        "operators": config.lookup_operators,
        "calls": config.push_calls,
        "budget_ms": BUDGET_MS,
        "answer_delay_ms": delay,
        "target_ms": BUDGET_MS + TARGET_SLACK_MS,
    }
    for name, args in variants:
        print(f"bench: lookups {name}, {config.lookup_operators} operators", flush=True)
        server: ChildProcess | None = None
        env: dict[str, str] = {}
        if args:
            server, template = start_lookup_server(workdir, f"lookup-{name}", *args)
            env = {"CALLER_LOOKUP_URL": template, "CALLER_LOOKUP_BUDGET_MS": str(BUDGET_MS)}
        deployment = deploy(config, workdir, extra_env=env)
        out["processes"] = deployment.web_command
        try:
            gc.collect()
            gc.disable()  # as in the suite: no collection in the middle of the stamps
            try:
                measured = asyncio.run(_push(config, deployment, sessions, workdir))
            finally:
                gc.enable()
        except BaseException:
            for proc in [*deployment.web, *deployment.others]:
                print(f"bench: {proc.name} log tail:\n{proc.tail()}", file=sys.stderr)
            raise
        finally:
            deployment.stop()
            if server is not None:
                server.stop()
        row: dict[str, Any] = {"push": measured["product"]}
        if name == "answer":
            row["name_after_push"] = measured["name_after_push"]
            row["name_after_send"] = measured["name_after_send"]
        out[name] = row
    return out
