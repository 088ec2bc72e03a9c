"""A faithful fake Yeastar P-Series PBX: OpenAPI REST, event WebSocket and control API, one port.

The behaviour follows the Yeastar OpenAPI as docs/pbx.md sets it out. Where a fact is
*unconfirmed*, the simulator picks the most plausible reading and says so in a comment, so a
client built against it does not silently depend on a guess. The calls themselves live in
``generator.CallBook``; the unauthenticated ``/_sim/`` control API is in ``control``.

Everything runs on one asyncio loop; ``SimulatorThread`` hosts that loop in a daemon thread so
synchronous code (pytest, Django commands) can drive it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from aiohttp import ClientError, ClientSession, ClientTimeout, WSCloseCode, WSMsgType, web

from screening.simulator.control import ControlApi, Faults
from screening.simulator.directory import Answer, Directory
from screening.simulator.generator import (
    ACCEPTED,
    ENDED,
    HELD,
    REFUSED,
    TRUNKS,
    CallBook,
    SimCall,
    envelope,
    live_msg,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

API = "/openapi/v1.0"
ERRMSG = {
    -2: "INTERNAL SERVER ERROR",
    -1: "FAILURE",
    0: "SUCCESS",
    10001: "INTERFACE NOT EXISTED",
    10004: "TOKEN EXPIRED",
    40001: "PARAMETER SYNTAX ERROR",
    40002: "PARAMETER ERROR",
    60002: "MAX LIMITATION EXCEEDED",
    70004: "ACCOUNT IP BLOCKED",
    70130: "CAHNNEL ID NOT FOUND",  # (sic) the PBX's own spelling
}
_SOCKET_GONE = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
KNOWN_EVENT_IDS = frozenset(range(30001, 30040))
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_RETRIES = 3
MAX_LOG_ENTRIES = 50_000
CDR_MAX_PAGE = 10_000  # cdr/search's default and largest page (doc)
HTML_ERROR_PAGE = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"

Handler = Callable[[web.Request, dict[str, Any]], dict[str, Any]]


def result(errcode: int, **extra: Any) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": ERRMSG[errcode], **extra}


def param_error(name: str, validation_type: str = "required", value: Any = None) -> dict[str, Any]:
    item: dict[str, Any] = {"field": name, "validation_type": validation_type}
    if value is not None:
        item["value"] = str(value)
    return result(40002, invalid_param_list=[item])


def sign(secret: str, body: bytes) -> str:
    """Yeastar's webhook signature: Base64(HMAC-SHA256(key=secret, msg=raw body))."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        return None


def _same(given: Any, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


@dataclass
class Token:
    client_id: str
    access: str
    refresh: str
    access_expires: float  # time.monotonic()
    refresh_expires: float


class PbxSimulator:
    """One fake PBX. Build it anywhere; ``start``/``make_app`` run on the loop that serves it."""

    def __init__(
        self,
        *,
        client_id: str = "pbxscreen-demo",
        client_secret: str = "pbxscreen-demo-secret",  # noqa: S107 - the demo's published secret
        call_rate: float = 0.0,
        window_seconds: float = 10.0,
        idle_timeout: float = 60.0,
        token_ttl: float = 1800,
        refresh_ttl: float = 86400,
        max_tokens: int = 8,
        max_auth_failures: int = 5,
        hangup_probability: float = 0.15,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        seed: int | None = None,
        serial: str = "3631A2124XXX",
        talk_seconds: tuple[float, float] = (1.0, 5.0),
        ring_seconds: tuple[float, float] = (0.3, 1.5),
        answer_probability: float = 0.85,
        contacts: int = 24,
        regular_callers: list[str] | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.call_rate = call_rate
        self.refresh_ttl = refresh_ttl
        self.max_tokens = max_tokens
        self.max_auth_failures = max_auth_failures
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret or ""
        self.serial = serial
        self.faults = Faults(token_ttl=token_ttl, idle_timeout=idle_timeout)
        self.base_url = ""

        self._rng = random.Random(seed)
        self.book = CallBook(
            rng=self._rng,
            emit=self._emit,
            serial=serial,
            window_seconds=window_seconds,
            ring_seconds=ring_seconds,
            talk_seconds=talk_seconds,
            answer_probability=answer_probability,
            hangup_probability=hangup_probability,
            # Repeat callers: given (the demo's callers with a history), or made up.
            regular_callers=regular_callers,
        )
        # Company contacts (some with the regular callers' numbers) and block lists.
        self.directory = Directory(self._rng, count=contacts, callers=self.book.callers.regulars)
        self.deliveries: dict[str, int] = {}  # call_id -> sockets its 30016 was written to
        self._tokens: dict[str, Token] = {}  # by access token
        self._refresh: dict[str, Token] = {}  # by refresh token
        self._auth_failures: dict[str, int] = {}
        self._blocked_ips: set[str] = set()
        # When a block ends (epoch seconds), and how 70004 answers write it. Whether a PBX block
        # expires, and the field and format that would say when, are unconfirmed: a third-party
        # client reads `block_expire_time`. A block without an end lasts until reset_blocks.
        self._block_ends: dict[str, float] = {}
        self.block_time_format = "seconds"  # or "ms", or "text" (local "YYYY-MM-DD HH:MM:SS")
        # How a real PBX turns a token away at the WebSocket is undocumented (an HTTP status, a
        # JSON errcode frame instead of the subscribe ack, or a close): the simulator can do each,
        # for the tokens live when asked (None: every token, new ones too).
        self._ws_reject_how = ""
        self._ws_reject_tokens: set[str] | None = None
        self.ws_rejections = 0
        self._sockets: dict[web.WebSocketResponse, set[int]] = {}
        self._log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG_ENTRIES)
        self._log_seq = 0
        self._webhook_queue: asyncio.Queue[bytes] | None = None
        self._webhook_stats = {"delivered": 0, "failed": 0}
        self._http: ClientSession | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._routes: dict[tuple[str, str], tuple[Handler, bool]] = {
            ("POST", "get_token"): (self._get_token, False),
            ("POST", "refresh_token"): (self._refresh_token, False),
            ("GET", "del_token"): (self._del_token, True),
            ("POST", "call/accept_inbound"): (self._accept_inbound, True),
            ("POST", "call/refuse_inbound"): (self._refuse_inbound, True),
            ("GET", "call/query"): (self._call_query, True),
            ("GET", "trunk/list"): (self._trunk_list, True),
            ("POST", "trunk_status_monitor/update"): (self._monitor_update, True),
            ("GET", "trunk_status_monitor/list"): (self._monitor_list, True),
            ("GET", "cdr/search"): (self._cdr_search, True),
            ("GET", "company_contact/list"): (self._wrap(self.directory.list), True),
            ("GET", "company_contact/search"): (self._wrap(self.directory.search), True),
            ("GET", "company_contact/get"): (self._wrap(self.directory.get), True),
            ("GET", "block_numbers/list"): (self._wrap(self.directory.block_list), True),
            ("POST", "block_numbers/create"): (self._wrap(self.directory.block_create), True),
            ("POST", "block_numbers/update"): (self._wrap(self.directory.block_update), True),
        }

    @staticmethod
    def _wrap(handler: Callable[[dict[str, Any]], Answer]) -> Handler:
        """A directory handler in the errcode envelope of the other endpoints."""

        def answer(_request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
            errcode, extra = handler(params)
            return result(errcode, **extra)

        return answer

    # ----------------------------------------------------------------- lifecycle

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(f"{API}/subscribe", self._subscribe)
        app.router.add_route("*", API + "/{endpoint:.+}", self._openapi)
        ControlApi(self).add_routes(app.router)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 8088,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> str:
        self._runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError:  # port taken: undo the startup hooks before reporting it
            await self.stop()
            raise
        bound_port = self._runner.addresses[0][1]
        shown_host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host  # noqa: S104
        self.base_url = f"{'https' if ssl_context else 'http'}://{shown_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _on_startup(self, _app: web.Application) -> None:
        self._http = ClientSession()
        self._webhook_queue = asyncio.Queue()
        self._spawn(self._deliver_webhooks())
        if self.call_rate > 0:
            self._spawn(self.book.generate(self.call_rate))

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.drop_sockets()

    async def _on_cleanup(self, _app: web.Application) -> None:
        self.book.cancel_all()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    # ----------------------------------------------------------------- REST

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        endpoint = request.match_info["endpoint"]
        raw = await request.read()
        body = _json_or_none(raw)
        response, errcode = await self._rest_response(request, endpoint, raw, body)
        self._record(request, endpoint, body, errcode, response.status)
        response.force_close()  # the PBX closes each REST connection after replying (docs/pbx.md)
        return response

    async def _rest_response(
        self, request: web.Request, endpoint: str, raw: bytes, body: Any
    ) -> tuple[web.Response, int | None]:
        if not request.headers.get("User-Agent"):
            # The doc only says such requests "may be ignored"; a 400 makes the mistake visible.
            return web.Response(status=400, text="400 Bad Request: User-Agent required"), None
        if self.faults.latency_ms > 0:
            # Slept before processing: a slow link delays the decision itself, not just the answer.
            await asyncio.sleep(self.faults.latency_ms / 1000)
        if self._chance(self.faults.http_500_rate):
            return web.Response(status=500, text="500 Internal Server Error"), None
        if self._chance(self.faults.non_json_rate):
            return web.Response(text=HTML_ERROR_PAGE, content_type="text/html"), None
        answer = self._dispatch(request, endpoint, raw, body)
        return web.json_response(answer), answer["errcode"]

    def _dispatch(
        self, request: web.Request, endpoint: str, raw: bytes, body: Any
    ) -> dict[str, Any]:
        route = self._routes.get((request.method, endpoint))
        if route is None:
            return result(10001)
        handler, needs_token = route
        # Garbage and revoked tokens get 10004 too; the doc only names expiry (unconfirmed).
        if needs_token and self._live_token(request.query.get("access_token")) is None:
            return result(10004)
        if request.method == "POST" and raw.strip() and not isinstance(body, dict):
            return result(40001)
        params = body if request.method == "POST" else dict(request.query)
        if endpoint.startswith("call/") and self._chance(self.faults.error_rate):
            return result(-2)
        return handler(request, params or {})

    def _record(
        self,
        request: web.Request,
        endpoint: str,
        body: Any,
        errcode: int | None,
        http_status: int,
    ) -> None:
        self._log_seq += 1
        query = {k: v for k, v in request.query.items() if k != "access_token"}
        self._log.append(
            {
                "seq": self._log_seq,
                "time": time.time(),
                "method": request.method,
                "endpoint": endpoint,
                "body": body,
                "query": query,
                "errcode": errcode,
                "http_status": http_status,
                "remote": request.remote,
            }
        )

    # ----------------------------------------------------------------- tokens

    def _live_token(self, access: str | None) -> Token | None:
        token = self._tokens.get(access or "")
        if token is not None and token.access_expires <= time.monotonic():
            self._revoke(token)
            return None
        return token

    def _revoke(self, token: Token) -> None:
        self._tokens.pop(token.access, None)
        self._refresh.pop(token.refresh, None)

    def live_tokens(self, client_id: str | None = None) -> int:
        for token in list(self._tokens.values()):
            self._live_token(token.access)  # drops the expired ones
        return sum(1 for t in self._tokens.values() if client_id in (None, t.client_id))

    def revoke_tokens(self) -> int:
        count = len(self._tokens)
        self._tokens.clear()
        self._refresh.clear()
        return count

    def _issue(self, client_id: str) -> dict[str, Any]:
        now = time.monotonic()
        token = Token(
            client_id=client_id,
            access=secrets.token_urlsafe(24),
            refresh=secrets.token_urlsafe(24),
            access_expires=now + self.faults.token_ttl,
            refresh_expires=now + self.refresh_ttl,
        )
        self._tokens[token.access] = token
        self._refresh[token.refresh] = token
        return result(
            0,
            access_token=token.access,
            access_token_expire_time=int(self.faults.token_ttl),
            refresh_token=token.refresh,
            refresh_token_expire_time=int(self.refresh_ttl),
        )

    def _get_token(self, request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        ip = request.remote or "unknown"
        ends = self._block_ends.get(ip)
        if ip in self._blocked_ips and ends is not None and time.time() >= ends:
            self._blocked_ips.discard(ip)
            self._block_ends.pop(ip, None)
            self._auth_failures.pop(ip, None)
        if ip in self._blocked_ips:
            # 70004 vs 70087 for a blocked IP is unconfirmed (docs/pbx.md); 70004 reads closest.
            if ends is None:
                return result(70004)
            return result(70004, block_expire_time=self._block_time(ends))
        for name in ("username", "password"):
            if not params.get(name):
                return param_error(name)
        if not (
            _same(params["username"], self.client_id)
            and _same(params["password"], self.client_secret)
        ):
            self._auth_failures[ip] = self._auth_failures.get(ip, 0) + 1
            if self._auth_failures[ip] >= self.max_auth_failures:
                self._blocked_ips.add(ip)
            return result(
                -1, invalid_param_list=[{"field": "username or password", "value": "error"}]
            )
        self._auth_failures.pop(ip, None)
        if self.live_tokens(self.client_id) >= self.max_tokens:
            # The 8-token cap is documented; its errcode is unconfirmed. 60002 is the table's
            # generic "quantity limit reached".
            return result(60002)
        return self._issue(self.client_id)

    def _refresh_token(self, _request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("refresh_token"):
            return param_error("refresh_token")
        token = self._refresh.get(str(params["refresh_token"]))
        if token is None or token.refresh_expires <= time.monotonic():
            return result(10004)  # errcode for a dead refresh token: unconfirmed
        # Whether the old access token survives a refresh is unconfirmed; we end it (strict case).
        self._revoke(token)
        return self._issue(token.client_id)

    def _del_token(self, request: web.Request, _params: dict[str, Any]) -> dict[str, Any]:
        token = self._live_token(request.query.get("access_token"))
        if token is not None:
            self._revoke(token)
        return result(0)

    # ----------------------------------------------------------------- call endpoints

    def _pending_call(self, params: dict[str, Any]) -> SimCall | dict[str, Any]:
        channel_id = params.get("channel_id")
        if not channel_id:
            return param_error("channel_id")
        call = self.book.pending(str(channel_id))
        # Decided, auto-accepted, hung up or never existed all look alike: the held channel is gone.
        # 70130 for these cases is the plausible code, not a confirmed one (docs/pbx.md).
        return result(70130) if call is None else call

    def _accept_inbound(self, _request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        call = self._pending_call(params)
        if isinstance(call, dict):
            return call
        self.book.decide(call, ACCEPTED)
        return result(0, call_id=call.call_id)

    def _refuse_inbound(self, _request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        call = self._pending_call(params)
        if isinstance(call, dict):
            return call
        self.book.decide(call, ACCEPTED if self.faults.ignore_refuse else REFUSED)
        return result(0, call_id=call.call_id)

    def _call_query(self, _request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        selectors = [name for name in ("call_id", "type", "extension") if params.get(name)]
        if len(selectors) != 1:
            return param_error("call_id or type or extension", "one_required")
        name, value = selectors[0], params[selectors[0]]
        live = self.book.live()
        if name == "call_id":
            live = [call for call in live if call.call_id == value]
        elif name == "type":
            live = live if value == "inbound" else []  # every simulated call is inbound
        else:
            live = [call for call in live if call.extension == value and call.state != HELD]
        return result(0, data=[live_msg(call) for call in live])

    # ----------------------------------------------------------------- trunk endpoints

    def _trunk_list(self, _request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        return _paged([trunk.as_list_item() for trunk in TRUNKS], params)

    def _monitor_update(self, _request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        items = params.get("trunk_monitor_list")
        if not isinstance(items, list) or not items:
            return param_error("trunk_monitor_list")
        updates: dict[int, dict[str, int]] = {}
        for item in items:
            trunk_id = item.get("trunk_id") if isinstance(item, dict) else None
            # Any trunk the PBX owns; one missing from the monitor list is added to it.
            if not isinstance(trunk_id, int) or trunk_id not in {t.id for t in TRUNKS}:
                return param_error("trunk_id", "invalid", trunk_id)
            flags = {
                k: item[k] for k in ("enb_call_status", "enb_control_inbound_call") if k in item
            }
            for key, flag in flags.items():
                if flag not in (0, 1):
                    return param_error(key, "invalid", flag)
            updates[trunk_id] = flags
        for trunk_id, flags in updates.items():
            entry = self.book.monitor.setdefault(
                trunk_id, {"enb_call_status": 0, "enb_control_inbound_call": 0}
            )
            entry.update(flags)
        return result(0)

    def _monitor_list(self, _request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        """The read-back of the Trunk Status Monitor settings, paged like the other lists (the
        documented ``sort_by``/``order_by`` are taken as their default, trunk id ascending)."""
        monitor = self.book.monitor
        items = [
            {"trunk_id": t.id, "name": t.name, **monitor[t.id]} for t in TRUNKS if t.id in monitor
        ]
        return _paged(items, params)

    # ----------------------------------------------------------------- call records

    def _cdr_search(self, _request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
        """Call records whose start lies in [start_time, end_time], paged. The bounds are taken as
        Unix seconds (the endpoint also takes a date-time in the PBX's display format, which this
        PBX does not offer); the default and largest page is 10,000 records, as documented."""
        if self.faults.fail_cdr_search:
            return result(-2)
        bounds: dict[str, int] = {}
        for name in ("start_time", "end_time"):
            value = str(params.get(name, "")).strip()
            if not value.isdigit():
                return param_error(name, "invalid" if value else "required", value or None)
            bounds[name] = int(value)
        try:
            page_size = int(params.get("page_size", CDR_MAX_PAGE))
        except ValueError:
            return param_error("page_size", "invalid")
        if not 1 <= page_size <= CDR_MAX_PAGE:
            return param_error("page_size", "invalid", page_size)
        records = self.book.search_records(bounds["start_time"], bounds["end_time"] + 0.999)
        return _paged(records, {**params, "page_size": page_size})

    # ----------------------------------------------------------------- event delivery

    def _emit(self, event_type: int, msg: dict[str, Any]) -> dict[str, Any]:
        frame = envelope(event_type, self.serial, msg)
        text = json.dumps(frame, separators=(",", ":"))
        # Which calls actually reached a subscriber: the soak's invariants only hold pbxscreen to
        # calls it was told about (the others the PBX routed unscreened while the link was down).
        call_id = msg.get("call_id") if event_type == 30016 else None
        for ws, topics in list(self._sockets.items()):
            if event_type in topics and not ws.closed:
                self._spawn(self._send_quietly(ws, text, call_id))
        if self.webhook_url and self._webhook_queue is not None:
            for _ in range(2 if self.faults.webhook_duplicate else 1):
                self._webhook_queue.put_nowait(text.encode())
        return frame

    async def _send_quietly(
        self, ws: web.WebSocketResponse, text: str, call_id: str | None = None
    ) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(text)
            if call_id is not None:
                self.deliveries[call_id] = self.deliveries.get(call_id, 0) + 1

    async def _deliver_webhooks(self) -> None:
        """One ordered delivery queue, like a single push worker on the PBX."""
        assert self._webhook_queue is not None
        while True:
            body = await self._webhook_queue.get()
            delivered = await self._post_webhook(body)
            self._webhook_stats["delivered" if delivered else "failed"] += 1

    async def _post_webhook(self, body: bytes) -> bool:
        if not self.webhook_url or self._http is None:
            return False
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Yeastar-PBX-Simulator/1.0",
            "X-Signature": sign(self.webhook_secret, body),
        }
        timeout = ClientTimeout(total=WEBHOOK_TIMEOUT_S)
        for attempt in range(1 + WEBHOOK_RETRIES):
            try:
                async with self._http.post(
                    self.webhook_url, data=body, headers=headers, timeout=timeout
                ) as response:
                    if 200 <= response.status < 300:
                        return True
                    log.info("webhook answered HTTP %s", response.status)
            except (ClientError, TimeoutError) as exc:
                log.info("webhook push failed: %r", exc)
            await asyncio.sleep(0.2 * (attempt + 1))  # retry spacing is unconfirmed
        return False

    # ----------------------------------------------------------------- WebSocket

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        rejection, errcode = self._ws_rejection(request)
        if rejection is not None:
            self._record(request, "subscribe", None, errcode, rejection.status)
            return rejection
        how = self._ws_refusal(request.query.get("access_token"))
        if how.startswith("http_"):
            self.ws_rejections += 1
            status = int(how.removeprefix("http_"))
            self._record(request, "subscribe", None, 10004, status)
            return web.json_response(result(10004), status=status)
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)
        await ws.prepare(request)
        self._record(request, "subscribe", None, 10004 if how else None, 101)
        if how:
            self.ws_rejections += 1
            await self._refuse_socket(ws, how)
            return ws
        self._sockets[ws] = set()
        try:
            await self._serve_socket(ws)
        finally:
            self._sockets.pop(ws, None)
        return ws

    def _ws_rejection(self, request: web.Request) -> tuple[web.Response | None, int | None]:
        if not request.headers.get("User-Agent"):
            return web.Response(status=400, text="400 Bad Request: User-Agent required"), None
        if self.faults.refuse_websocket:
            return web.Response(status=503, text="503 Service Unavailable"), None
        if self._live_token(request.query.get("access_token")) is None:
            return web.json_response(result(10004), status=401), 10004
        return None, None

    def _ws_refusal(self, token: str | None) -> str:
        if not self._ws_reject_how:
            return ""
        if self._ws_reject_tokens is not None and token not in self._ws_reject_tokens:
            return ""
        return self._ws_reject_how

    async def _refuse_socket(self, ws: web.WebSocketResponse, how: str) -> None:
        """Upgrade done, then turn the token away: an errcode frame in place of the subscribe
        ack, or a close before any answer."""
        if how == "errcode":
            with contextlib.suppress(TimeoutError):
                await ws.receive(timeout=2.0)  # the topic_list
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps(result(10004)))
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"token refused")

    def reject_websockets(self, how: str, *, every_token: bool = False) -> int:
        """From now on turn away WebSocket handshakes made with the tokens live now (or with
        every token): ``http_401`` (or any ``http_<status>``), ``errcode`` or ``close``; ``""``
        stops. Returns how many tokens it applies to (-1: all)."""
        if how and how not in {"errcode", "close"}:
            status = how.removeprefix("http_")
            if not how.startswith("http_") or not status.isdigit() or not 400 <= int(status) < 600:
                raise ValueError("how must be http_<4xx|5xx>, errcode, close or empty")
        self._ws_reject_how = how
        self.live_tokens()  # drops the expired ones
        self._ws_reject_tokens = None if every_token else set(self._tokens)
        return -1 if every_token else len(self._ws_reject_tokens)

    async def _serve_socket(self, ws: web.WebSocketResponse) -> None:
        while not ws.closed:
            try:
                # Only client frames (including pings) reset the idle timer; whether PBX-sent events
                # also count is unconfirmed (docs/pbx.md), so we take the strict reading.
                message = await ws.receive(timeout=self.faults.idle_timeout or None)
            except TimeoutError:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"idle timeout")
                return
            if message.type is WSMsgType.TEXT:
                await ws.send_str(self._ws_reply(ws, message.data))
            elif message.type in _SOCKET_GONE:
                return

    def _ws_reply(self, ws: web.WebSocketResponse, text: str) -> str:
        if text.strip() == "heartbeat":
            return "heartbeat response"
        payload = _json_or_none(text.encode())
        if not isinstance(payload, dict):
            return json.dumps(result(40001))
        topics = payload.get("topic_list")
        valid = (
            isinstance(topics, list)
            and bool(topics)
            and all(type(t) is int and t in KNOWN_EVENT_IDS for t in topics)
        )
        if not valid:
            # The error shape for bad topics is unconfirmed; this follows the REST 40002 form.
            return json.dumps(param_error("topic_list", "invalid", topics))
        # Whether a second topic_list replaces or extends the first is unconfirmed; we replace.
        self._sockets[ws] = set(topics)
        return json.dumps(result(0))

    async def drop_sockets(self) -> int:
        sockets = list(self._sockets)
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"dropped") for ws in sockets),
            return_exceptions=True,
        )
        return len(sockets)

    # ----------------------------------------------------------------- public helpers

    async def inject_call(self, caller: str, called: str, trunk_name: str) -> dict[str, Any]:
        """Offer a call as if it arrived on ``trunk_name``; returns the 30016 envelope sent."""
        return self.book.offer(caller, called, trunk_name).envelope

    def call_info(self, call_id: str) -> dict[str, Any] | None:
        call = self.book.calls.get(call_id)
        if call is None:
            return None
        return {**call.as_dict(), "delivered": self.deliveries.get(call_id, 0)}

    def log_entries(self, endpoint: str | None = None, since: int = 0) -> list[dict[str, Any]]:
        return [e for e in self._log if e["seq"] > since and endpoint in (None, e["endpoint"])]

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        self.faults.merge(changes)
        return asdict(self.faults)

    def set_trunk_monitor(
        self,
        trunk_name: str,
        *,
        control_inbound: bool | None = None,
        call_status: bool | None = None,
        listed: bool = True,
    ) -> dict[str, int] | None:
        """Set a trunk's Trunk Status Monitor as if changed on the PBX's web page: its flags, or
        ``listed=False`` to take it off the monitor list. Returns what the list now holds."""
        trunk = next((t for t in TRUNKS if t.name == trunk_name), None)
        if trunk is None:
            raise KeyError(trunk_name)
        if not listed:
            self.book.monitor.pop(trunk.id, None)
            return None
        entry = self.book.monitor.setdefault(
            trunk.id, {"enb_call_status": 0, "enb_control_inbound_call": 0}
        )
        if control_inbound is not None:
            entry["enb_control_inbound_call"] = int(control_inbound)
        if call_status is not None:
            entry["enb_call_status"] = int(call_status)
        return dict(entry)

    def _block_time(self, ends: float) -> int | str:
        if self.block_time_format == "ms":
            return int(ends * 1000)
        if self.block_time_format == "text":
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ends))
        return int(ends)

    def block(
        self, ip: str = "127.0.0.1", *, expire_in: float | None = None, form: str = "seconds"
    ) -> None:
        """Block ``ip`` as after 5 failed logins; with ``expire_in`` the block ends by itself
        and 70004 answers say when, written as ``form`` (seconds, ms or text)."""
        if form not in {"seconds", "ms", "text"}:
            raise ValueError("form must be seconds, ms or text")
        self._blocked_ips.add(ip)
        self.block_time_format = form
        if expire_in is None:
            self._block_ends.pop(ip, None)
        else:
            self._block_ends[ip] = time.time() + expire_in

    def reset_blocks(self) -> list[str]:
        cleared = sorted(self._blocked_ips)
        self._block_ends.clear()
        self._blocked_ips.clear()
        self._auth_failures.clear()
        return cleared

    def state(self) -> dict[str, Any]:
        calls: list[SimCall] = list(self.book.calls.values())
        outcomes: dict[str, int] = {}
        for call in calls:
            outcomes[call.outcome] = outcomes.get(call.outcome, 0) + 1
        return {
            "calls": len(calls),
            "outcomes": outcomes,
            "live_calls": sum(1 for c in calls if c.state != ENDED),
            "held_calls": sum(1 for c in calls if c.state == HELD),
            "live_tokens": self.live_tokens(),
            "websockets": len(self._sockets),
            "subscribed_websockets": sum(1 for topics in self._sockets.values() if topics),
            "blocked_ips": sorted(self._blocked_ips),
            "websocket_rejections": self.ws_rejections,
            "log_entries": len(self._log),
            "webhook": {"url": self.webhook_url, **self._webhook_stats},
            "call_rate": self.call_rate,
            "window_seconds": self.book.window_seconds,
        }


class SimulatorThread:
    """A ``PbxSimulator`` on its own event loop in a daemon thread; every method is thread-safe."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        **simulator_kwargs: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.sim = PbxSimulator(**simulator_kwargs)
        self.client_id = self.sim.client_id
        self.client_secret = self.sim.client_secret
        self.base_url = ""
        self._ssl_context = ssl_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="pbx-simulator", daemon=True
        )

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + f"{API}/subscribe"

    def start(self) -> SimulatorThread:
        self._thread.start()
        try:
            self.base_url = self._run(
                self.sim.start(self.host, self.port, ssl_context=self._ssl_context)
            )
        except BaseException:
            self._halt_loop()  # e.g. the port is taken: leave no thread behind
            raise
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._run(self.sim.stop())
        finally:
            self._halt_loop()

    def _halt_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=15)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def on_loop() -> T:
            return fn(*args, **kwargs)

        return self._run(on_loop())

    def inject(
        self,
        caller: str = "07700900123",
        called: str = "02079460000",
        trunk_name: str = "peer-to-41",
        *,
        hangup_after: float | None = None,
    ) -> dict[str, Any]:
        call = self._call(
            self.sim.book.offer, caller, called, trunk_name, hangup_after=hangup_after
        )
        return {
            "envelope": call.envelope,
            "call_id": call.call_id,
            "channel_id": call.channel_id,
            "held": bool(call.envelope),
        }

    def hangup(self, call_id: str) -> bool:
        return self._call(self.sim.book.hangup, call_id)

    def log(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return self._call(self.sim.log_entries, endpoint)

    def call(self, call_id: str) -> dict[str, Any]:
        info = self._call(self.sim.call_info, call_id)
        if info is None:
            raise KeyError(call_id)
        return info

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        return self._call(self.sim.set_faults, **faults)

    def live_tokens(self) -> int:
        return self._call(self.sim.live_tokens)

    def state(self) -> dict[str, Any]:
        return self._call(self.sim.state)

    def drop_sockets(self) -> int:
        return self._run(self.sim.drop_sockets())

    def revoke_tokens(self) -> int:
        return self._call(self.sim.revoke_tokens)

    def reset_blocks(self) -> list[str]:
        return self._call(self.sim.reset_blocks)

    def block(self, ip: str = "127.0.0.1", **options: Any) -> None:
        self._call(self.sim.block, ip, **options)

    def reject_websockets(self, how: str, *, every_token: bool = False) -> int:
        return self._call(self.sim.reject_websockets, how, every_token=every_token)

    def set_trunk_monitor(self, trunk_name: str, **changes: Any) -> dict[str, int] | None:
        return self._call(self.sim.set_trunk_monitor, trunk_name, **changes)

    def contacts(self) -> list[dict[str, Any]]:
        return self._call(lambda: [dict(c) for c in self.sim.directory.contacts.values()])

    def add_contact(self, **fields: Any) -> dict[str, Any]:
        return dict(self._call(self.sim.directory.add, fields))

    def change_contact(self, contact_id: int, **fields: Any) -> dict[str, Any]:
        contact = self._call(self.sim.directory.change, contact_id, fields)
        if contact is None:
            raise KeyError(contact_id)
        return dict(contact)

    def remove_contact(self, contact_id: int) -> bool:
        return self._call(self.sim.directory.remove, contact_id)

    def block_lists(self) -> list[dict[str, Any]]:
        return self._call(lambda: [dict(i) for i in self.sim.directory.block_lists.values()])


def _paged(items: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """One page of a list endpoint (``page`` from 1, ``page_size`` 100 by default) with the
    list's ``total_number``."""
    try:
        page = max(1, int(params.get("page", 1)))
        page_size = max(1, int(params.get("page_size", 100)))
    except ValueError:
        return param_error("page", "invalid")
    chunk = items[(page - 1) * page_size : page * page_size]
    return result(0, total_number=len(items), data=chunk)
