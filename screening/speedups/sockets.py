"""Operator socket writes sent at once when nothing is buffered (speedup ``direct_write``;
README.md here).

Twisted's TCP transport never writes in ``write``: it buffers the bytes and asks the reactor to
watch the socket, and on Daphne's asyncio reactor that is, per write, an ``add_writer`` (an
``epoll_ctl``), a turn of the loop, Twisted's logging context around ``doWrite``, the ``send``,
and a ``remove_writer`` (another ``epoll_ctl``). A push to N sockets pays that N times, for a
frame that almost always fits the socket's send buffer at once. asyncio's own transports, which
the raw ``websockets`` floor uses, try the ``send`` first and buffer only what is left.

``install(transport)`` gives one operator socket's transport that behaviour: while Twisted holds
nothing unsent for it, a write goes straight to ``socket.send``; what did not fit, and every
write while something is buffered, goes to Twisted's own ``write`` unchanged, so bytes leave in
the order they were written. A socket error is left to Twisted: the bytes go to its ``write``
and its next ``doWrite`` meets the error and closes the connection its usual way. Only plain
TCP transports (Twisted's ``tcp.Server``, not TLS) are changed.

Hooks used (Twisted internals, pinned in ``WRITTEN_FOR``): ``tcp.Server``, and on the
transport ``socket``, ``connected``, ``disconnecting``, ``_writeDisconnected``, ``TLS``,
``dataBuffer``, ``offset`` and ``_tempDataBuffer`` (what ``FileDescriptor.doWrite`` sends).
"""

from __future__ import annotations

from typing import Any


def install(transport: Any) -> bool:
    """Let ``transport`` send at once while nothing is buffered; False if it is not plain TCP."""
    from twisted.internet import tcp

    if type(transport) is not tcp.Server or getattr(transport, "TLS", False):
        return False
    sock = transport.socket
    buffered_write = transport.write

    def write(data: bytes) -> None:
        if (
            type(data) is bytes
            and data
            and transport.connected
            and not transport.disconnecting
            and not transport._writeDisconnected
            and not transport._tempDataBuffer
            and transport.offset == len(transport.dataBuffer)
        ):
            try:
                sent = sock.send(data)
            except OSError:
                sent = 0  # full (EAGAIN), or broken: Twisted's write and doWrite take it from here
            if sent == len(data):
                return
            data = data[sent:]
        buffered_write(data)

    transport.write = write
    return True
