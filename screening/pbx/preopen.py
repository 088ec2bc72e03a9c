"""Decisions sent on a connection opened while the operator reads the card (docs/pbx.md).

The PBX closes every REST connection after replying, so a request on a connection of its own pays
a TCP and a TLS handshake before its first byte leaves: on a PBX across the internet, two or three
round trips between the operator's click and the PBX having the decision. So when intake leaves a
call pending for the operators, it announces the call to every web process through the channel
layer (group ``GROUP``, one message per call, received once per process by ``listen``); each
process opens one connection to the PBX for it and completes the TLS handshake (``warm_up``, in
``runtime.run_preopen``'s pool: never a thread a decision needs). When that process sends the
call's decision, the request goes out on it.

The request itself is PbxClient's: ``PreopenAdapter`` is a ``requests`` transport adapter mounted
on the two decision URLs, so the token, the timeout bounded by the call's deadline, the errcode
handling, the metrics and the redaction are exactly those of every other request. Without a warm
connection for the call (none opened, none left, the switch off) the adapter is stock
``HTTPAdapter``: a connection of its own, like every other request.

A warm connection may have gone stale: the PBX or a middlebox closed it. Before anything is
written to it, it is checked (readable means EOF, an alert, or TLS 1.3 session tickets; a
non-blocking read tells them apart); a stale one is closed and the decision goes on a fresh
connection instead. Once the request's first byte may have left, nothing is retried: a failure
then is reported as the failure it is, never sent twice.

Warm connections are bounded per process (``PBX_PREOPEN_CONNECTIONS``, one per pending call at
most) and closed at the call's deadline or after ``IDLE_SECONDS``, whichever comes first, so none
lingers past the window in which it could carry a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import http.client
import logging
import math
import os
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, select_proxy
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.util import wait_for_read

from screening import runtime
from screening.health import describe

log = logging.getLogger("screening.pbx.preopen")

GROUP = "pbx.preopen"
MESSAGE = "pbx.preopen"
# A warm connection nobody used is closed after this long even inside a long window: the PBX or a
# middlebox may drop an idle connection, and one that closed under us costs a fresh handshake.
IDLE_SECONDS = 15.0
CONNECT_TIMEOUT_SECONDS = 5.0
SWEEP_INTERVAL = 1.0
JOIN_INTERVAL = 10.0
DECISION_ENDPOINTS = ("call/accept_inbound", "call/refuse_inbound")

# (scheme, host, port, verify): a warm connection serves only a request to the same place,
# verified the same way.
Key = tuple[str, str, int, bool | str]

_sending_for: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pbx_preopen_channel", default=None
)


def enabled() -> bool:
    return settings.PBX_PREOPEN_CONNECTIONS > 0 and bool(settings.PBX_BASE_URL)


def message(channel_id: str, deadline: float) -> dict[str, Any]:
    """What intake sends to ``GROUP`` for a call left pending (``deadline``: epoch seconds)."""
    return {"type": MESSAGE, "channel_id": channel_id, "deadline": deadline}


@contextlib.contextmanager
def sending_for(channel_id: str) -> Iterator[None]:
    """The requests sent inside are the decision for ``channel_id``: its warm connection may
    carry them (``answers.ask``)."""
    token = _sending_for.set(channel_id)
    try:
        yield
    finally:
        _sending_for.reset(token)


def key_for(url: str, verify: bool | str) -> Key:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return (scheme, parts.hostname or "", port, verify)


@functools.lru_cache(maxsize=8)
def _target(base_url: str, verify: bool | str) -> Key | None:
    """Where this process's decisions go and how they are verified, as ``requests`` resolves it
    for PbxClient's session (REQUESTS_CA_BUNDLE and the like); None when a proxy would carry them
    (a proxy's connection is not ours to open ahead)."""
    url = f"{base_url}/openapi/v1.0/{DECISION_ENDPOINTS[0]}"
    with requests.Session() as session:
        merged = session.merge_environment_settings(url, {}, False, verify, None)
    if select_proxy(url, merged["proxies"]):
        return None
    return key_for(url, merged["verify"])


def _connect(key: Key, timeout: float) -> HTTPConnection:
    """A connected (and, for https, handshaken and verified) connection, as requests would make
    it for ``verify`` (its ``HTTPAdapter.cert_verify``)."""
    scheme, host, port, verify = key
    if scheme != "https":
        conn = HTTPConnection(host, port, timeout=timeout)
    elif verify is False:
        conn = HTTPSConnection(host, port, timeout=timeout, cert_reqs="CERT_NONE")
    else:
        where = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
        trust = {"ca_cert_dir": where} if os.path.isdir(where) else {"ca_certs": where}
        conn = HTTPSConnection(host, port, timeout=timeout, cert_reqs="CERT_REQUIRED", **trust)
    try:
        conn.connect()
    except BaseException:
        conn.close()
        raise
    return conn


def usable(conn: HTTPConnection) -> bool:
    """Whether nothing has come from the peer on ``conn`` since it opened, so a request written
    now is read by the PBX. Readable means the peer closed it (EOF, a TLS alert) or sent TLS 1.3
    session tickets after the handshake; a non-blocking read tells them apart without taking any
    application data (a byte the PBX sent unasked makes the connection unusable too)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        if not wait_for_read(sock, timeout=0.0):
            return True
        before = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            sock.recv(1)
        except (ssl.SSLWantReadError, BlockingIOError):
            return True  # only TLS records (session tickets): nothing from the PBX itself
        finally:
            sock.settimeout(before)
    except OSError:
        return False
    return False  # EOF (b""), or a byte nobody asked for


@dataclass(eq=False)
class _Warm:
    key: Key
    channel_id: str
    expires: float  # time.monotonic()
    conn: HTTPConnection | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    closed: bool = False  # expired or abandoned: whoever holds the connection closes it


class WarmConnections:
    """This process's warm connections, one per pending call at most; any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_channel: dict[str, _Warm] = {}
        # opened, used, stale, failed, expired, late: what became of them (logs, tests)
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_channel)

    def open_for(self, key: Key, channel_id: str, deadline: float, limit: int) -> bool:
        """Open and handshake a connection for the call, unless it has one or ``limit`` are open;
        True when one is ready. Blocks for the handshake: run it through ``runtime.run_preopen``."""
        left = deadline - time.time()
        if left <= 0:
            return False
        self.sweep()
        warm = _Warm(key, channel_id, time.monotonic() + min(left, IDLE_SECONDS))
        with self._lock:
            if channel_id in self._by_channel or len(self._by_channel) >= limit:
                return False
            self._by_channel[channel_id] = warm
        conn: HTTPConnection | None = None
        keep = False
        try:
            conn = _connect(key, min(left, CONNECT_TIMEOUT_SECONDS))
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            # A certificate refused, the PBX unreachable: the decision opens its own connection
            # and reports what it meets there, like any request without one.
            log.info("pbx: no connection opened ahead for a call (%s)", describe(exc))
            with self._lock:
                self.counts["failed"] += 1
        finally:
            # Whatever happened (even an error nobody foresaw, which propagates to be logged),
            # the entry is settled and a decision waiting for it is let go at once.
            with self._lock:
                keep = conn is not None and not warm.closed
                if keep:
                    warm.conn = conn
                    self.counts["opened"] += 1
                elif self._by_channel.get(channel_id) is warm:
                    del self._by_channel[channel_id]
            if conn is not None and not keep:
                conn.close()
            warm.ready.set()
        return keep

    def take(self, key: Key, channel_id: str, wait: float) -> HTTPConnection | None:
        """The call's warm connection, checked usable, now the caller's alone; None when it has
        none. One still handshaking is waited for, at most ``wait`` seconds."""
        with self._lock:
            warm = self._by_channel.pop(channel_id, None)
        if warm is None:
            return None
        if warm.key != key:
            self._discard(warm)
            return None
        if not warm.ready.wait(max(0.0, wait)):
            self._discard(warm)  # closed when its handshake ends
            return None
        conn = warm.conn
        if conn is None:
            return None  # its handshake failed
        if not usable(conn):
            conn.close()
            with self._lock:
                self.counts["stale"] += 1
            log.info("pbx: the connection opened ahead went stale; sending on a fresh one")
            return None
        with self._lock:
            self.counts["used"] += 1
        return conn

    def _discard(self, warm: _Warm) -> None:
        with self._lock:
            warm.closed = True
            conn, warm.conn = warm.conn, None
        if conn is not None:
            conn.close()

    def sweep(self) -> int:
        """Close the connections whose call's window or idle limit has passed; how many."""
        now = time.monotonic()
        with self._lock:
            expired = [w for w in self._by_channel.values() if w.expires <= now]
            for warm in expired:
                del self._by_channel[warm.channel_id]
            self.counts["expired"] += len(expired)
        for warm in expired:
            self._discard(warm)
        return len(expired)

    def close_all(self) -> None:
        with self._lock:
            every = list(self._by_channel.values())
            self._by_channel.clear()
        for warm in every:
            self._discard(warm)


pool = WarmConnections()


def warm_up(channel_id: str, deadline: float) -> bool:
    """Open this process's connection for a call announced pending (``runtime.run_preopen``)."""
    if not enabled():
        return False
    key = _target(settings.PBX_BASE_URL, settings.PBX_VERIFY_TLS)
    if key is None:
        return False
    return pool.open_for(key, channel_id, deadline, settings.PBX_PREOPEN_CONNECTIONS)


def _read_timeout(timeout: Any) -> float | None:
    if isinstance(timeout, tuple):
        return timeout[1]
    if isinstance(timeout, urllib3.Timeout):
        value = timeout.read_timeout
        return value if isinstance(value, int | float) else None
    return timeout


def _bounded(timeout: Any, read: float) -> Any:
    """``timeout`` (as ``requests`` takes it) with no part longer than ``read`` seconds."""
    if isinstance(timeout, tuple):
        connect = timeout[0]
        return (read if connect is None else min(connect, read), read)
    if isinstance(timeout, urllib3.Timeout):
        connect = timeout.connect_timeout
        bounded = read if not isinstance(connect, int | float) else min(connect, read)
        return urllib3.Timeout(connect=bounded, read=read)
    return read


class PreopenAdapter(HTTPAdapter):
    """Stock ``HTTPAdapter``, except that a decision whose call has a usable warm connection in
    this process is written to that connection instead of a new one."""

    def __init__(self, warm: WarmConnections) -> None:
        super().__init__()
        self.warm = warm

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        channel_id = _sending_for.get()
        conn = None
        url = request.url or ""
        read = _read_timeout(timeout)
        if (
            channel_id is not None
            and cert is None
            and settings.PBX_PREOPEN_CONNECTIONS > 0
            and not select_proxy(url, dict(proxies or {}))
        ):
            started = time.monotonic()
            wait = CONNECT_TIMEOUT_SECONDS if read is None else read
            conn = self.warm.take(key_for(url, verify), channel_id, wait)
            if read is not None:  # a handshake waited for counts against the request's time
                read = max(0.001, read - (time.monotonic() - started))
                timeout = _bounded(timeout, read)  # on a fresh connection too: the deadline holds
        if conn is None:
            return super().send(request, stream, timeout, verify, cert, dict(proxies or {}))
        return self._send_on(conn, request, stream, read, verify, cert, proxies)

    def _send_on(
        self,
        conn: HTTPConnection,
        request: requests.PreparedRequest,
        stream: bool,
        read: float | None,
        verify: bool | str,
        cert: Any,
        proxies: Mapping[str, str] | None,
    ) -> requests.Response:
        """What ``HTTPAdapter.send`` does with a pooled connection, on ``conn``, with the same
        exceptions; never retried (the request may have left). ``read``: seconds each socket
        operation may wait, as requests' read timeout."""
        self.add_headers(
            request, stream=stream, timeout=read, verify=verify, cert=cert, proxies=proxies
        )
        chunked = not (request.body is None or "Content-Length" in request.headers)
        conn.timeout = read if read is not None else socket.getdefaulttimeout()
        try:
            conn.request(
                request.method or "GET",
                self.request_url(request, dict(proxies or {})),
                body=request.body,  # type: ignore[arg-type]  # as HTTPAdapter.send passes it
                headers=request.headers,  # type: ignore[arg-type]
                chunked=chunked,
                preload_content=False,
                decode_content=False,
            )
            answer = conn.getresponse()
        except TimeoutError as exc:
            conn.close()
            raise requests.ReadTimeout(exc, request=request) from None
        except ssl.SSLError as exc:
            conn.close()
            raise requests.exceptions.SSLError(exc, request=request) from None
        except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError) as exc:
            conn.close()
            raise requests.ConnectionError(exc, request=request) from None
        response = self.build_response(request, answer)
        try:
            # The PBX's answers are small and it closes the connection after them: read it all
            # now and let the socket go (raises requests' own exceptions, as Session.send would).
            _ = response.content
        finally:
            conn.close()
        return response


# --- the per-process receiver ---------------------------------------------------------------


async def listen() -> None:
    """Receive the calls intake announces (once per process, whatever the number of sockets) and
    warm a connection for each; close expired ones. Runs for the life of a web process."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel: str | None = None
    joined_at = -math.inf
    while True:
        try:
            if channel is None:
                channel = await layer.new_channel()
                runtime.spawn(_receive(layer, channel), "pbx-preopen-receive")
            if time.monotonic() - joined_at >= JOIN_INTERVAL:
                # Joined again now and then: a membership lost with a restarted Redis comes back.
                await layer.group_add(GROUP, channel)
                joined_at = time.monotonic()
        except Exception as exc:
            log.info("pbx pre-open: cannot join the channel layer: %s", describe(exc))
        pool.sweep()
        await asyncio.sleep(SWEEP_INTERVAL)


async def _receive(layer: Any, channel: str) -> None:
    while True:
        try:
            received = await layer.receive(channel)
        except Exception as exc:
            log.info("pbx pre-open: receiving failed: %s", describe(exc))
            await asyncio.sleep(SWEEP_INTERVAL)
            continue
        channel_id, deadline = received.get("channel_id"), received.get("deadline")
        if (
            received.get("type") != MESSAGE
            or not isinstance(channel_id, str)
            or isinstance(deadline, bool)
            or not isinstance(deadline, int | float)
        ):
            continue
        runtime.spawn(runtime.run_preopen(warm_up, channel_id, float(deadline)), "pbx-preopen")
