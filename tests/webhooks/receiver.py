"""A webhook receiver for the tests: a threaded ``http.server`` on a free loopback port that
records every request (arrival time, headers, raw body) and answers as the test says: 200, a
status code, a hang, or not at all (stopped, then started again on the same port)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from screening.webhooks import signing
from tests.support.live import free_port


@dataclass
class Received:
    at: float  # time.time() when the request arrived
    headers: dict[str, str]
    raw: bytes

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.raw)

    def verified(self, secret: str) -> bool:
        """As a receiver checks it: the signature over the raw body, at most 5 minutes old."""
        return signing.verify(secret, self.headers.get(signing.HEADER, ""), self.raw)


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    # status to answer for the n-th request (0-based); None: hang for ``hang`` seconds.
    answer: Callable[[int], int | None] = lambda n: 200
    hang: float = 30.0
    received: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    n = len(receiver.received)
                    receiver.received.append(Received(time.time(), dict(self.headers), raw))
                status = receiver.answer(n)
                if status is None:
                    time.sleep(receiver.hang)
                    status = 200
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.event for r in self.received]

    def ids(self) -> list[str]:
        return [e["id"] for e in self.events()]
