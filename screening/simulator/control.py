"""The simulator's control API under ``/_sim/``: no auth, for the demo, tests and benchmarks.

The names are a fixed interface (the demo, the tests and the bench use them): inject a call,
read the request log, see how a call ended, set faults.
The rest (sockets, tokens, IP blocks, webhook target, state counts, company contacts and block
lists) serves tests and benchmarks.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from screening.simulator.server import PbxSimulator


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return body


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class Faults:
    """Runtime knobs, read and merged through ``/_sim/faults``."""

    latency_ms: float = 0.0
    error_rate: float = 0.0
    http_500_rate: float = 0.0
    non_json_rate: float = 0.0
    token_ttl: float = 1800.0
    idle_timeout: float = 60.0
    refuse_websocket: bool = False
    webhook_duplicate: bool = False
    # A misbehaving PBX: answers SUCCESS to refuse_inbound but routes the call anyway (for
    # outcome-confirmation tests: 30011/30012 then contradict our "refused").
    ignore_refuse: bool = False
    # cdr/search answers -2 (the PBX failing while an outage window is reconciled).
    fail_cdr_search: bool = False

    def merge(self, changes: dict[str, Any]) -> None:
        """Validate every change first so a bad request leaves the knobs untouched."""
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if not hasattr(self, name):
                raise ValueError(f"unknown fault {name!r}; known: {sorted(asdict(self))}")
            if isinstance(getattr(self, name), bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
            elif name.endswith("_rate") and value > 1:
                raise ValueError(f"{name} is a fraction between 0 and 1")
            checked[name] = value
        for name, value in checked.items():
            setattr(self, name, value)


class ControlApi:
    def __init__(self, sim: PbxSimulator) -> None:
        self.sim = sim

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/_sim/calls", self.inject)
        router.add_get("/_sim/calls", self.calls)
        router.add_get("/_sim/calls/{call_id}", self.call)
        router.add_post("/_sim/calls/{call_id}/hangup", self.hangup)
        router.add_get("/_sim/log", self.log)
        router.add_get("/_sim/faults", self.faults)
        router.add_post("/_sim/faults", self.faults)
        router.add_get("/_sim/webhook", self.webhook)
        router.add_post("/_sim/webhook", self.webhook)
        router.add_post("/_sim/drop_sockets", self.drop_sockets)
        router.add_get("/_sim/tokens", self.tokens)
        router.add_post("/_sim/tokens/revoke", self.revoke_tokens)
        router.add_post("/_sim/reset_blocks", self.reset_blocks)
        router.add_get("/_sim/state", self.state)
        router.add_get("/_sim/contacts", self.contacts)
        router.add_post("/_sim/contacts", self.contacts)
        router.add_post("/_sim/contacts/{contact_id}", self.contact)
        router.add_delete("/_sim/contacts/{contact_id}", self.contact)
        router.add_get("/_sim/block_numbers", self.block_numbers)
        router.add_post("/_sim/trunk_monitor", self.trunk_monitor)
        router.add_post("/_sim/websocket_rejection", self.websocket_rejection)
        router.add_post("/_sim/block", self.block)

    async def inject(self, request: web.Request) -> web.Response:
        body = _json_object(await request.read())
        fields = {name: body.get(name) for name in ("from", "to", "trunk_name")}
        missing = [
            name for name, value in fields.items() if not value or not isinstance(value, str)
        ]
        if missing:
            return _error(f"missing or non-string field(s): {', '.join(missing)}")
        hangup_after = body.get("hangup_after")
        if hangup_after is not None and not _is_number(hangup_after):
            return _error("hangup_after must be a number of seconds")
        call = self.sim.book.offer(
            fields["from"], fields["to"], fields["trunk_name"], hangup_after=hangup_after
        )
        # A call on a trunk without Control Inbound Call is not held: no 30016, envelope {}.
        reply = {
            "envelope": call.envelope,
            "call_id": call.call_id,
            "channel_id": call.channel_id,
            "held": bool(call.envelope),
        }
        return web.json_response(reply, status=201)

    async def calls(self, _request: web.Request) -> web.Response:
        calls = [self.sim.call_info(call_id) for call_id in list(self.sim.book.calls)]
        return web.json_response({"calls": calls})

    async def call(self, request: web.Request) -> web.Response:
        info = self.sim.call_info(request.match_info["call_id"])
        return _error("unknown call_id", 404) if info is None else web.json_response(info)

    async def hangup(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        if call_id not in self.sim.book.calls:
            return _error("unknown call_id", 404)
        if not self.sim.book.hangup(call_id):
            return _error("call already ended", 409)
        return web.json_response(self.sim.call_info(call_id))

    async def log(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return _error("since must be an integer log sequence number")
        entries = self.sim.log_entries(request.query.get("endpoint"), since)
        return web.json_response({"entries": entries})

    async def faults(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.sim.faults.merge(_json_object(await request.read()))
            except ValueError as exc:
                return _error(str(exc))
        return web.json_response(asdict(self.sim.faults))

    async def webhook(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body = _json_object(await request.read())
            self.sim.webhook_url = body.get("url") or None
            self.sim.webhook_secret = body.get("secret") or self.sim.webhook_secret
        return web.json_response({"url": self.sim.webhook_url, "secret": self.sim.webhook_secret})

    async def drop_sockets(self, _request: web.Request) -> web.Response:
        return web.json_response({"dropped": await self.sim.drop_sockets()})

    async def tokens(self, _request: web.Request) -> web.Response:
        return web.json_response({"live": self.sim.live_tokens()})

    async def revoke_tokens(self, _request: web.Request) -> web.Response:
        return web.json_response({"revoked": self.sim.revoke_tokens()})

    async def reset_blocks(self, _request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.sim.reset_blocks()})

    async def state(self, _request: web.Request) -> web.Response:
        return web.json_response(self.sim.state())

    async def contacts(self, request: web.Request) -> web.Response:
        """GET: every company contact; POST {contact_name, company, mobile, ...}: add one."""
        directory = self.sim.directory
        if request.method == "POST":
            body = _json_object(await request.read())
            problem = directory.check_fields(body)
            if problem is None and not str(body.get("contact_name", "")).strip():
                problem = "contact_name is required"
            if problem:
                return _error(problem)
            return web.json_response(directory.add(body), status=201)
        return web.json_response({"contacts": list(directory.contacts.values())})

    async def contact(self, request: web.Request) -> web.Response:
        """POST {field: value}: change a company contact; DELETE: remove it."""
        try:
            contact_id = int(request.match_info["contact_id"])
        except ValueError:
            return _error("contact id must be an integer")
        directory = self.sim.directory
        if contact_id not in directory.contacts:
            return _error("unknown contact id", 404)
        if request.method == "DELETE":
            directory.remove(contact_id)
            return web.json_response({"removed": contact_id})
        body = _json_object(await request.read())
        problem = directory.check_fields(body)
        if problem:
            return _error(problem)
        return web.json_response(directory.change(contact_id, body))

    async def block_numbers(self, _request: web.Request) -> web.Response:
        return web.json_response({"lists": list(self.sim.directory.block_lists.values())})

    async def trunk_monitor(self, request: web.Request) -> web.Response:
        """POST {trunk_name, control_inbound?, call_status?, listed?}: change a trunk's Trunk
        Status Monitor as an admin would on the PBX (``listed: false`` takes it off the list)."""
        body = _json_object(await request.read())
        name = body.get("trunk_name")
        flags = {k: body[k] for k in ("control_inbound", "call_status", "listed") if k in body}
        if not isinstance(name, str) or any(not isinstance(v, bool) for v in flags.values()):
            return _error("trunk_name (a string) and optional true/false flags expected")
        try:
            entry = self.sim.set_trunk_monitor(name, **flags)
        except KeyError:
            return _error("unknown trunk_name", 404)
        return web.json_response({"trunk_name": name, "monitor": entry})

    async def websocket_rejection(self, request: web.Request) -> web.Response:
        """POST {how: "http_401" | "http_<status>" | "errcode" | "close" | "", every_token?}:
        turn away WebSocket handshakes made with the tokens live now (or with every token)."""
        body = _json_object(await request.read())
        how, every = body.get("how", ""), body.get("every_token", False)
        if not isinstance(how, str) or not isinstance(every, bool):
            return _error("how must be a string and every_token true or false")
        try:
            tokens = self.sim.reject_websockets(how, every_token=every)
        except ValueError as exc:
            return _error(str(exc))
        return web.json_response({"how": how, "tokens": tokens})

    async def block(self, request: web.Request) -> web.Response:
        """POST {ip?, expire_in?, form?}: block an IP as after 5 failed logins; with
        ``expire_in`` (seconds) the block ends by itself and 70004 answers carry
        ``block_expire_time`` written as ``form`` (seconds, ms or text)."""
        body = _json_object(await request.read())
        ip, expire_in, form = (
            body.get("ip", "127.0.0.1"),
            body.get("expire_in"),
            body.get("form", "seconds"),
        )
        if not isinstance(ip, str) or (expire_in is not None and not _is_number(expire_in)):
            return _error("ip must be a string and expire_in a number of seconds")
        try:
            self.sim.block(ip, expire_in=expire_in, form=str(form))
        except ValueError as exc:
            return _error(str(exc))
        return web.json_response({"blocked": ip, "expire_in": expire_in, "form": form})
