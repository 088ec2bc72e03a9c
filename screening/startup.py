"""The one start-up path of every pbxscreen process, and the Daphne runner.

``start`` arms what a process needs besides answering requests: the push path's event loop, the
channel layer watchdog (``screening.health``: /healthz's layer check, and a resync of every local
browser after the layer lost pushes), the sweeper (expiry a dead process left behind, the link
banner, the statistics roll-up), the outgoing webhooks' sender (``screening.webhooks.delivery``)
and, where wanted, the PBX listener. ``serve`` and ``demo``
call it through ``run``, ``pbx_listen`` directly, and the ASGI application on its first
connection (for a plain ``daphne`` command line). The loop, the watchdog and the sweeper are
armed once per event loop, so the server's own call and the ASGI one do not double up.

The in-memory channel layer only works inside one process and one loop, so the embedded setup
cannot run the listener beside the server: it must run inside it.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from django.conf import settings

from screening import health, runtime
from screening.calls import chain, endings, push, reconcile, retention
from screening.calls.intake import handle_event
from screening.contacts import sync as contact_sync
from screening.pbx import link, preopen, trunks
from screening.pbx.client import PbxClient, PbxNotConfigured
from screening.pbx.listener import PbxListener
from screening.reports import rollup
from screening.webhooks import delivery as webhook_delivery

log = logging.getLogger("screening.startup")

SWEEP_INTERVAL = 1.0


def make_listener() -> PbxListener:
    # An auth lockout is kept in the cache on purpose (five failed logins block our IP on the PBX):
    # with Redis it outlives restarts and holds for every process. New credentials are a clean
    # slate, and `manage.py pbx_auth_reset` clears it by hand.
    client = PbxClient.from_settings()

    async def handler(event: Any, arrived: datetime) -> None:
        await handle_event(event, via="websocket", received_at=arrived)

    return PbxListener(
        client,
        handler,
        heartbeat=settings.PBX_HEARTBEAT_SECONDS,
        verify=settings.PBX_VERIFY_TLS,
        on_link=functools.partial(track_outages, client),
    )


async def track_outages(client: PbxClient, state: str, at: datetime) -> None:
    """The listener's link changes as outage windows (screening.calls.reconcile); a window closed
    by the link coming back is reconciled in a task of its own, so events flow meanwhile."""
    if state == link.CONNECTING:
        await runtime.run_blocking(reconcile.listener_started, at)
    elif state == link.DOWN:
        await runtime.run_blocking(reconcile.link_lost, at)
    elif state == link.UP:
        closed = await runtime.run_blocking(reconcile.link_back, at)
        if closed:
            runtime.spawn(runtime.run_blocking(reconcile.reconcile_all, closed, client), "outages")


def listener_wanted() -> bool:
    # PBX_LISTENER=off: a web process of the scale-out setup, where `pbx_listen` is the listener.
    return (
        settings.PBX_LISTENER and bool(settings.PBX_BASE_URL) and settings.PBX_EVENTS == "websocket"
    )


async def close_listener(listener: PbxListener, *, revoke_token: bool = True) -> None:
    await listener.stop()
    if not revoke_token:
        return
    try:
        await runtime.run_blocking(listener.client.del_token)  # frees one of the PBX's 8 slots
    except Exception as exc:
        log.warning("could not revoke the PBX token at shutdown: %s", exc)


async def sweep_forever(interval: float = SWEEP_INTERVAL) -> None:
    """Catch calls whose timer or deciding process died, announce a silent listener, roll up the
    statistics, start the contact sync and the audit chain check when due. Cheap: one indexed
    query per tick, the roll-up every few minutes."""
    outage = ""  # the last outage logged, so a Redis or database outage is one line, not one a tick
    while True:
        try:
            await runtime.run_blocking(endings.sweep)
            await runtime.run_blocking(link.announce_if_stale)
            outage = ""
        except health.UNAVAILABLE as exc:
            if health.describe(exc) != outage:
                outage = health.describe(exc)
                log.warning("sweep skipped, shared state unavailable: %s", outage)
        except Exception:
            log.exception("sweep failed")
        # Every CONTACT_SYNC_MINUTES, one process copies the PBX's company contacts, in a task
        # of its own (PBX and database pools): the sweep never waits for it.
        contact_sync.scheduler.tick()
        # Every few minutes, one process reads which trunks the PBX really holds for screening.
        trunks.monitor_check.tick()
        # Daily, one process pseudonymises numbers older than RETENTION_DAYS, also in a task of
        # its own, one batch at a time in the database pool.
        retention.scheduler.tick()
        # Hourly, one process verifies the audit rows written since the last check, in a task of
        # its own (database pool).
        chain.scheduler.tick()
        # Outage windows whose reconciliation failed are retried, in a task of their own.
        reconcile.retry_scheduler.tick()
        if rollup.due():
            try:
                await runtime.run_blocking(rollup.run_if_due)
            except Exception:
                log.exception("statistics roll-up failed")
        await asyncio.sleep(interval)


_started: set[int] = set()  # id() of the loops this process has started on


async def start(*, listener: bool = False, decides: bool = True) -> PbxListener | None:
    """Arm this process on the running loop: the push loop and the sweeper once per loop, plus
    the PBX listener when asked (only ``run`` and ``pbx_listen`` ask, once). ``decides``: this
    process sends operators' decisions (a web process; not ``pbx_listen``), so it opens
    connections to the PBX ahead of them. Returns the listener started, if the PBX is
    configured."""
    loop = asyncio.get_running_loop()
    if id(loop) not in _started:
        _started.add(id(loop))
        push.register_loop(loop)
        health.layer_watchdog.start()
        runtime.spawn(sweep_forever(), "sweeper")
        if decides and preopen.enabled():
            runtime.spawn(preopen.listen(), "pbx-preopen")
        # Outgoing webhooks: a thread of its own (own connection, own HTTP session), once per
        # process, so a slow receiver never holds this loop or its pools.
        webhook_delivery.start()
    if not listener:
        return None
    try:
        pbx_listener = make_listener()
    except PbxNotConfigured as exc:
        log.error("PBX listener not started: %s", exc)
        await runtime.run_blocking(link.set_state, link.NOT_CONFIGURED, str(exc))
        return None
    runtime.spawn(pbx_listener.run(), "pbx-listener")
    return pbx_listener


def run(
    *,
    host: str,
    port: int,
    with_listener: bool,
    before: Callable[[], Awaitable[None]] | None = None,
    after: Callable[[], Awaitable[None]] | None = None,
    verbosity: int = 1,
) -> None:
    """Serve until interrupted. ``before``/``after`` run on the server loop at start and stop."""
    from screening.speedups.framing import server_class

    server = server_class()  # imports Daphne, which installs the asyncio reactor: first
    from twisted.internet import defer, reactor

    from pbxscreen.asgi import application

    listener: PbxListener | None = None

    async def on_start() -> None:
        nonlocal listener
        # What is loaded by now (Django, apps, models) lives as long as the process: frozen, it is
        # not rescanned by the full collections that hundreds of sockets' objects trigger (one
        # such pass stalled a 500-operator broadcast for ~0.4 s; docs/performance.md).
        gc.collect()
        gc.freeze()
        if before is not None:
            await before()
        listener = await start(listener=with_listener)

    async def on_stop() -> None:
        if listener is not None:
            await close_listener(listener)
        if after is not None:
            await after()

    def ready() -> None:
        # Daphne has made the reactor's loop current; tasks created now start with the reactor.
        asyncio.get_event_loop().create_task(on_start())

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(on_stop()))
    )
    server(
        application=application,
        endpoints=[f"tcp:port={port}:interface={host}"],
        signal_handlers=True,
        ready_callable=ready,
        verbosity=verbosity,
        action_logger=None,
        # Behind nginx the peer is always the proxy; the login throttle needs the browser's address.
        proxy_forwarded_address_header="X-Forwarded-For" if settings.PROXY_HEADERS else None,
        proxy_forwarded_port_header="X-Forwarded-Port" if settings.PROXY_HEADERS else None,
        proxy_forwarded_proto_header="X-Forwarded-Proto" if settings.PROXY_HEADERS else None,
    ).run()
