"""The floor: a minimal raw WebSocket broadcast server
(``python -m screening.devtools.bench.floor``).

No Django, no channel layer: one process, one ``websockets`` server, a set of connections. The
bench opens a control socket (path ``/control``) and sends ``{"payload": "<text>"}``; the server
stamps ``time.time()``, broadcasts the text to every other connection, and answers with the stamp.
The same clients then measure stamp -> receipt exactly as they do against the product.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time

from websockets.asyncio.server import ServerConnection, broadcast, serve

clients: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path == "/control":
        async for raw in ws:
            payload = json.loads(raw)["payload"]
            stamp = time.time()
            broadcast(clients, payload)
            await ws.send(json.dumps({"t": stamp, "clients": len(clients)}))
        return
    clients.add(ws)
    try:
        await ws.wait_closed()
    finally:
        clients.discard(ws)


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # No compression and no pings: the product's Daphne sockets use neither.
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
        print(f"floor listening on {port}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(int(sys.argv[1])))
