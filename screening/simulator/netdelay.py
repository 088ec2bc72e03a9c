"""A TCP proxy that adds a fixed delay each way, to stand for a PBX across the internet in front
of the simulator (tests, the bench's ``pbxdelay`` part). It relays bytes as they are (TLS passes
through end to end) and counts the connections it carries.

A connection to it is accepted at once by the kernel, as on loopback, so the round trip a real
TCP handshake costs is charged to the connection's first bytes instead: nothing the client sends
leaves before one round trip after the connection opened, plus the one-way delay. A client that
opened its connection ahead (``screening/pbx/preopen.py``) has paid that already.

``python -m screening.simulator.netdelay LISTEN_PORT TARGET_HOST:TARGET_PORT DELAY_MS`` runs one
until interrupted, printing a line per connection it accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import Callable
from typing import Any


class DelayProxy:
    """The proxy, on the running loop. ``delay``: seconds added in each direction."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        delay: float,
        host: str = "127.0.0.1",
        on_connection: Callable[[int], None] | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.on_connection = on_connection  # told the running count at each new connection
        self.delay = delay
        self.host = host
        self.port = 0
        self.connections = 0  # accepted so far: each is one TCP (and TLS) handshake to the PBX
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self.drop()
            if self._tasks:  # their reads end with the connections just closed
                await asyncio.wait(list(self._tasks), timeout=2)
            await self._server.wait_closed()
            self._server = None

    def drop(self) -> int:
        """Close every connection carried now, both ways (as a PBX or a middlebox dropping idle
        connections would), bytes still in flight lost with them; returns how many sockets were
        closed."""
        writers = list(self._writers)
        for writer in writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()  # a relay sleeping out its delay ends now, not after it
        return len(writers)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        self.connections += 1
        if self.on_connection is not None:
            self.on_connection(self.connections)
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._writers.discard(writer)
            writer.close()
            return
        self._writers.add(up_writer)
        try:
            await asyncio.gather(
                # The client's bytes wait out the TCP handshake's round trip it did not pay here.
                self._pipe(reader, up_writer, not_before=opened + 2 * self.delay),
                self._pipe(up_reader, writer, not_before=0.0),
                return_exceptions=True,
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, not_before: float
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if dst.can_write_eof():
                            dst.write_eof()
                        else:
                            dst.close()
                    return
                dst.write(data)
                await dst.drain()

        sender = asyncio.create_task(forward())
        try:
            while True:
                try:
                    data = await src.read(65536)
                except OSError:
                    data = b""
                queue.put_nowait((max(loop.time(), not_before) + self.delay, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError, ConnectionError):
                await sender


class DelayProxyThread:
    """A ``DelayProxy`` on its own loop in a daemon thread (tests); thread-safe."""

    def __init__(self, target_host: str, target_port: int, delay: float) -> None:
        self.proxy = DelayProxy(target_host, target_port, delay)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netdelay", daemon=True)

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def open_now(self) -> int:
        """Connections carried at this moment."""
        return len(self.proxy._tasks)

    @property
    def connections(self) -> int:
        return self.proxy.connections

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> DelayProxyThread:
        self._thread.start()
        self._run(self.proxy.start())
        return self

    def drop(self) -> int:
        async def on_loop() -> int:
            return self.proxy.drop()

        return int(self._run(on_loop()))

    def stop(self) -> None:
        if self._thread.is_alive():
            try:
                self._run(self.proxy.stop())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=5)

    def __enter__(self) -> DelayProxyThread:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


async def _main(listen_port: int, target: str, delay_ms: float) -> None:
    host, _, port = target.rpartition(":")

    # One line per connection: the bench counts the handshakes a decision needed from the log.
    def opened(count: int) -> None:
        print(f"connection {count}", flush=True)

    proxy = DelayProxy(host, int(port), delay_ms / 1000, on_connection=opened)
    await proxy.start(listen_port)
    print(f"netdelay listening on {proxy.port} -> {target}, {delay_ms:g} ms each way", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3])))
