"""A stand-in for a CRM's caller lookup endpoint, for the tests and the bench.

``GET /lookup/<number>`` answers as told for that number (``LookupServer.answers``), else with
``default``: a name at once or after a delay, a hang until the server stops, an HTTP error,
or bytes that are not what a lookup should answer. Threaded (stdlib ``http.server``), so a
hanging answer never holds up another.

As a process (the bench): ``python -m screening.devtools.lookup_server PORT [--delay S] [--hang]``
answers every number with ``{"name": "Caller <number>"}`` after the delay, or never.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"{}"
    delay: float = 0.0
    hang: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    # Send Content-Length (False: the body ends when the connection closes).
    declare_length: bool = True

    @classmethod
    def name(cls, name: Any, delay: float = 0.0, field: str = "name") -> Answer:
        return cls(body=json.dumps({field: name}).encode(), delay=delay)

    @classmethod
    def json(cls, data: Any, delay: float = 0.0) -> Answer:
        return cls(body=json.dumps(data).encode(), delay=delay)


HANG = Answer(hang=True)
NOT_FOUND = Answer(status=404, body=b'{"error": "not found"}')


class LookupServer:
    def __init__(self, port: int = 0, default: Answer = NOT_FOUND) -> None:
        self.default = default
        self.answers: dict[str, Answer] = {}
        # How a number is answered; the default reads ``answers``, then ``default``.
        self.answer_for: Callable[[str], Answer] = lambda n: self.answers.get(n, self.default)
        self.hits: list[tuple[str, float]] = []  # (number, time.time()) per request
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def template(self) -> str:
        return f"http://127.0.0.1:{self.port}/lookup/{{number}}"

    def hits_for(self, number: str) -> int:
        return sum(1 for n, _ in list(self.hits) if n == number)

    def start(self) -> LookupServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases the hanging answers
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LookupServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                number = unquote(self.path.rsplit("/", 1)[-1])
                server.hits.append((number, time.time()))
                answer = server.answer_for(number)
                if answer.hang:
                    server.stopping.wait()
                    self.close_connection = True
                    return
                if answer.delay and server.stopping.wait(answer.delay):
                    return
                with contextlib.suppress(OSError):  # the client gave up: nothing to tell it
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    if answer.declare_length:
                        self.send_header("Content-Length", str(len(answer.body)))
                    else:
                        self.send_header("Connection", "close")
                        self.close_connection = True
                    self.end_headers()
                    self.wfile.write(answer.body)

            def log_message(self, *_args: Any) -> None:
                pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--hang", action="store_true", help="never answer")
    args = parser.parse_args()
    server = LookupServer(args.port)
    server.answer_for = lambda n: HANG if args.hang else Answer.name(f"Caller {n}", args.delay)
    server.start()
    print(f"lookup server listening on {server.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()
