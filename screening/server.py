"""Run Daphne with the PBX listener (and, for the demo, the simulator) on one event loop.

The in-memory channel layer only works inside one process and one loop, so the embedded setup
cannot run the listener beside the server: it must run inside it.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from django.conf import settings

from screening import link, push, runtime
from screening.intake import handle_event
from screening.pbx.client import PbxClient, PbxNotConfigured
from screening.pbx.listener import PbxListener

log = logging.getLogger("screening.server")


def make_listener() -> PbxListener:
    # An auth lockout survives restarts on purpose (five failed logins block our IP on the PBX);
    # new credentials are a clean slate, and `manage.py pbx_auth_reset` clears it by hand.
    client = PbxClient.from_settings()

    async def handler(event: Any, arrived: datetime) -> None:
        await handle_event(event, via="websocket", received_at=arrived)

    return PbxListener(
        client, handler, heartbeat=settings.PBX_HEARTBEAT_SECONDS, verify=settings.PBX_VERIFY_TLS
    )


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
    from screening.wsfast import push_server_class

    push_server = push_server_class()  # imports Daphne, which installs the asyncio reactor: first
    from twisted.internet import defer, reactor

    from pbxscreen.asgi import application

    listener: PbxListener | None = None

    async def start() -> None:
        nonlocal listener
        push.register_loop(asyncio.get_running_loop())
        # What is loaded by now (Django, apps, models) lives as long as the process: frozen, it is
        # not rescanned by the full collections that hundreds of sockets' objects trigger (one
        # such pass stalled a 500-operator broadcast for ~0.4 s; README "Performance").
        gc.collect()
        gc.freeze()
        runtime.ensure_sweeper()
        if before is not None:
            await before()
        if with_listener:
            try:
                listener = make_listener()
            except PbxNotConfigured as exc:
                log.error("PBX listener not started: %s", exc)
                await runtime.run_blocking(link.set_state, link.NOT_CONFIGURED, str(exc))
                return
            runtime.spawn(listener.run(), "pbx-listener")

    async def stop() -> None:
        if listener is not None:
            await close_listener(listener)
        if after is not None:
            await after()

    def ready() -> None:
        # Daphne has made the reactor's loop current; tasks created now start with the reactor.
        asyncio.get_event_loop().create_task(start())

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: defer.Deferred.fromFuture(asyncio.ensure_future(stop()))
    )
    push_server(
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
