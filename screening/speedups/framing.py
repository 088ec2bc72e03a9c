"""Pushes framed once per message, not once per operator socket (speedup ``prepared_frames``;
README.md here).

Stock Channels + Daphne turn every push into, per socket: the consumer's ``send`` through the
session middleware's wrapper, ``Server.handle_reply``, ``WebSocketProtocol.serverSend`` (UTF-8
encoding the text again) and autobahn's ``sendMessage`` (building the frame again). A push is the
same bytes for everyone, and autobahn supports exactly this case: a ``PreparedMessage`` is framed
once and ``sendPreparedMessage`` writes it to each socket as is.

``server_class()`` is Daphne's ``Server`` with one addition, made through its public
``create_application`` method: a WebSocket's scope carries its Daphne protocol under
``PROTOCOL_KEY``. ``send_prepared`` uses it when present and the socket is open; otherwise (plain
``daphne``, a socket closing) it returns False and the caller sends the stock way; with the
speedup off, nothing is ever in the scope. The same hook installs ``direct_write``
(``screening.speedups.sockets``) on each WebSocket's transport; with both off,
``server_class()`` is Daphne's own ``Server``. Ordering is unchanged: the consumer still handles
one message at a time, and both paths write to the transport synchronously.
"""

from __future__ import annotations

import functools
from typing import Any

from autobahn.websocket.protocol import PreparedMessage

from screening import speedups
from screening.speedups import sockets

PROTOCOL_KEY = "pbxscreen.websocket_protocol"


def server_class() -> type[Any]:
    """Daphne's ``Server``, handing each WebSocket's protocol to the application in its scope
    (the stock class when the speedup is off).

    Imported here, not at module level: importing ``daphne.server`` installs Twisted's asyncio
    reactor, which only the serving process may do."""
    from daphne.server import Server
    from daphne.ws_protocol import WebSocketProtocol

    prepared = speedups.enabled("prepared_frames")
    direct = speedups.enabled("direct_write")
    if not prepared and not direct:
        return Server

    class PushServer(Server):  # type: ignore[misc]
        def create_application(self, protocol: Any, scope: dict[str, Any]) -> Any:
            if isinstance(protocol, WebSocketProtocol):
                if prepared:
                    scope[PROTOCOL_KEY] = protocol
                if direct:
                    sockets.install(protocol.transport)  # speedups.sockets
            return super().create_application(protocol, scope)

    return PushServer


@functools.lru_cache(maxsize=32)
def _prepared(text: str) -> PreparedMessage:
    # Server frames are unmasked. Each push has a new sequence number, so a small cache holds
    # the few messages being fanned out right now.
    return PreparedMessage(
        text.encode("utf-8"), isBinary=False, applyMask=False, doNotCompress=True
    )


def send_prepared(scope: dict[str, Any], text: str) -> bool:
    """Write ``text`` to the scope's socket as a frame shared with every other recipient."""
    protocol = scope.get(PROTOCOL_KEY)
    if protocol is None or protocol.state != protocol.STATE_OPEN:
        return False
    # doNotCompress: sent as is even where permessage-deflate was negotiated, which RFC 7692
    # allows (an uncompressed message is a valid message on such a connection).
    protocol.sendPreparedMessage(_prepared(text))
    return True
