"""Many light WebSocket clients in one asyncio process, for the suite (``bench --suite``).

The same client class talks to the product (``/ws/operator/`` with a session cookie) and to the
raw floor server, so both sides of every ratio pay the same client-side cost. A client only stamps
``time.time()`` and keeps the raw text of each frame; parsing happens after the measurement, so
N clients sharing one loop add as little queueing as possible to each other's stamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CONNECT_CONCURRENCY = 50


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted`` (capped by the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass
class Client:
    index: int
    ws: ClientConnection
    frames: list[tuple[float, str]] = field(default_factory=list)
    on_frame: Callable[[int, float, str], None] | None = None
    reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        clock = time.time
        frames = self.frames
        with contextlib.suppress(Exception):
            async for message in self.ws:
                at = clock()  # stamped first, before anything else
                text = message if isinstance(message, str) else message.decode()
                frames.append((at, text))
                if self.on_frame is not None:
                    self.on_frame(self.index, at, text)

    def parsed(self, since: int = 0) -> Iterable[tuple[float, dict[str, Any]]]:
        for at, text in self.frames[since:]:
            with contextlib.suppress(ValueError):
                yield at, json.loads(text)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader


async def open_clients(
    urls: list[str],
    headers: list[dict[str, str]] | None = None,
    origins: list[str] | None = None,
    expect_snapshot: bool = False,
    on_frame: Callable[[int, float, str], None] | None = None,
) -> list[Client]:
    """Open one client per URL (at most CONNECT_CONCURRENCY handshakes at a time)."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(i: int) -> Client:
        async with gate:
            ws = await connect(
                urls[i],
                additional_headers=(headers[i] if headers else None),
                origin=(origins[i] if origins else None),  # type: ignore[arg-type]
                compression=None,  # Daphne does not negotiate permessage-deflate either
                ping_interval=None,
                open_timeout=60,
                max_queue=None,  # never stall the reader: we want to see every frame
            )
            if expect_snapshot:
                first = await asyncio.wait_for(ws.recv(), timeout=30)
                if '"snapshot"' not in str(first)[:40]:
                    raise RuntimeError(f"client {i}: expected a snapshot first")
        client = Client(i, ws, on_frame=on_frame)
        client.start()
        return client

    results = await asyncio.gather(*(one(i) for i in range(len(urls))), return_exceptions=True)
    clients = [r for r in results if isinstance(r, Client)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await close_clients(clients)
        raise RuntimeError(f"{len(errors)} of {len(urls)} clients failed to connect: {errors[0]!r}")
    return clients


async def close_clients(clients: list[Client]) -> None:
    gate = asyncio.Semaphore(200)

    async def one(c: Client) -> None:
        async with gate:
            await c.close()

    await asyncio.gather(*(one(c) for c in clients))
