"""The fake Yeastar PBX over real sockets: REST, WebSocket, webhook push, /_sim/ control API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import aiohttp
import pytest
import requests
import urllib3

from screening.simulator import SimulatorThread

UA = {"User-Agent": "pbxscreen-tests"}
FAST_CALLS = {"ring_seconds": (0.01, 0.02), "talk_seconds": (0.05, 0.1)}


class Api:
    """Minimal Yeastar OpenAPI caller for the tests (the real client lives in pbx/client.py)."""

    def __init__(self, sim: SimulatorThread) -> None:
        self.sim = sim
        self.root = f"{sim.base_url}/openapi/v1.0/"

    def get_token(self, username: str | None = None, password: str | None = None) -> dict:
        body = {
            "username": username or self.sim.client_id,
            "password": password or self.sim.client_secret,
        }
        return requests.post(self.root + "get_token", json=body, headers=UA, timeout=5).json()

    def token(self) -> str:
        answer = self.get_token()
        assert answer["errcode"] == 0, answer
        return answer["access_token"]

    def get(self, endpoint: str, token: str, **params: str) -> dict:
        params["access_token"] = token
        return requests.get(self.root + endpoint, params=params, headers=UA, timeout=5).json()

    def post(self, endpoint: str, token: str, body: dict[str, Any]) -> dict:
        url = self.root + endpoint
        query = {"access_token": token}
        return requests.post(url, params=query, json=body, headers=UA, timeout=5).json()


def wait_for(predicate: Callable[[], bool], timeout: float = 2.5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def decode(frame: str) -> tuple[int, dict[str, Any]]:
    envelope = json.loads(frame)
    assert isinstance(envelope["msg"], str), "msg must be a JSON-encoded string on the wire"
    return envelope["type"], json.loads(envelope["msg"])


@pytest.fixture
def fast_sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(window_seconds=1.0, answer_probability=1.0, **FAST_CALLS) as sim:
        yield sim


# ----------------------------------------------------------------------------- tokens


def test_token_flow_refresh_and_delete(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    first = api.get_token()
    assert first["errcode"] == 0
    assert first["errmsg"] == "SUCCESS"
    assert first["access_token_expire_time"] == 1800
    assert first["refresh_token_expire_time"] == 86400
    assert api.get("trunk/list", first["access_token"])["total_number"] == 3

    url = api.root + "refresh_token"
    body = {"refresh_token": first["refresh_token"]}
    second = requests.post(url, json=body, headers=UA, timeout=5).json()
    assert second["errcode"] == 0
    assert second["access_token"] != first["access_token"]
    assert api.get("trunk/list", first["access_token"])["errcode"] == 10004  # old one ended
    assert requests.post(url, json=body, headers=UA, timeout=5).json()["errcode"] == 10004

    assert api.get("del_token", second["access_token"]) == {"errcode": 0, "errmsg": "SUCCESS"}
    assert api.get("trunk/list", second["access_token"])["errcode"] == 10004
    assert pbx_sim.live_tokens() == 0


def test_bad_or_missing_token_is_10004_and_unknown_endpoint_10001(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    assert api.get("call/query", "garbage", type="inbound") == {
        "errcode": 10004,
        "errmsg": "TOKEN EXPIRED",
    }
    no_token = requests.get(api.root + "trunk/list", headers=UA, timeout=5)
    assert no_token.status_code == 200
    assert no_token.json()["errcode"] == 10004
    assert api.get("no/such/thing", api.token())["errcode"] == 10001


def test_short_token_ttl_expires(pbx_sim: SimulatorThread) -> None:
    pbx_sim.set_faults(token_ttl=0.2)
    api = Api(pbx_sim)
    token = api.token()
    assert api.get("trunk/list", token)["errcode"] == 0
    time.sleep(0.3)
    assert api.get("trunk/list", token)["errcode"] == 10004


def test_at_most_eight_live_tokens(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    tokens = [api.token() for _ in range(8)]
    capped = api.get_token()
    assert capped["errcode"] == 60002
    assert capped["errmsg"] == "MAX LIMITATION EXCEEDED"
    assert api.get("del_token", tokens[0])["errcode"] == 0
    assert api.get_token()["errcode"] == 0
    assert requests.get(f"{pbx_sim.base_url}/_sim/tokens", timeout=5).json() == {"live": 8}


def test_five_failures_block_the_ip_until_reset(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    for _ in range(5):
        wrong = api.get_token(password="wrong")
        assert wrong["errcode"] == -1
        assert wrong["invalid_param_list"] == [{"field": "username or password", "value": "error"}]
    blocked = api.get_token()  # correct credentials, but the IP is on the blocklist now
    assert blocked == {"errcode": 70004, "errmsg": "ACCOUNT IP BLOCKED"}

    cleared = requests.post(f"{pbx_sim.base_url}/_sim/reset_blocks", timeout=5).json()
    assert cleared == {"cleared": ["127.0.0.1"]}
    assert api.get_token()["errcode"] == 0


def test_success_resets_the_failure_count(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    for _ in range(4):
        api.get_token(password="wrong")
    assert api.get_token()["errcode"] == 0
    for _ in range(4):
        assert api.get_token(password="wrong")["errcode"] == -1
    assert api.get_token()["errcode"] == 0


def test_user_agent_is_mandatory(pbx_sim: SimulatorThread) -> None:
    url = f"{pbx_sim.base_url}/openapi/v1.0/get_token"
    body = {"username": pbx_sim.client_id, "password": pbx_sim.client_secret}
    # SKIP_HEADER stops urllib3 from adding its own default User-Agent.
    headers = {"User-Agent": urllib3.util.SKIP_HEADER}
    answer = requests.post(url, json=body, headers=headers, timeout=5)
    assert answer.status_code == 400
    assert "json" not in answer.headers.get("Content-Type", "")
    [entry] = pbx_sim.log("get_token")
    assert entry["http_status"] == 400
    assert entry["errcode"] is None
    assert pbx_sim.live_tokens() == 0


# ----------------------------------------------------------------------------- screening


def test_accept_routes_the_call_and_a_second_decision_is_70130(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    token = api.token()
    offered = pbx_sim.inject()
    assert offered["channel_id"].startswith("PJSIP/trunk-peer-to-41-endpoint-")
    assert len(offered["channel_id"].rsplit("-", 1)[1]) == 8
    assert pbx_sim.call(offered["call_id"])["outcome"] == "pending"

    body = {"channel_id": offered["channel_id"]}
    accepted = api.post("call/accept_inbound", token, body)
    assert accepted == {"errcode": 0, "errmsg": "SUCCESS", "call_id": offered["call_id"]}
    call = pbx_sim.call(offered["call_id"])
    assert call["outcome"] == "accepted"
    assert call["decided_at"] >= call["offered_at"]

    again = api.post("call/accept_inbound", token, body)
    assert again == {"errcode": 70130, "errmsg": "CAHNNEL ID NOT FOUND"}
    assert api.post("call/refuse_inbound", token, body)["errcode"] == 70130
    unknown = {"channel_id": "PJSIP/trunk-x-endpoint-00000000"}
    assert api.post("call/refuse_inbound", token, unknown)["errcode"] == 70130

    [entry, *_] = pbx_sim.log("call/accept_inbound")
    assert entry["body"] == body
    assert entry["errcode"] == 0


def test_refuse_drops_the_call(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    offered = pbx_sim.inject(caller="anonymous")
    refused = api.post("call/refuse_inbound", api.token(), {"channel_id": offered["channel_id"]})
    assert refused["errcode"] == 0
    call = pbx_sim.call(offered["call_id"])
    assert (call["outcome"], call["state"]) == ("refused", "ended")


def test_no_decision_means_auto_accept_after_the_window(fast_sim: SimulatorThread) -> None:
    offered = fast_sim.inject()
    time.sleep(0.5)
    assert fast_sim.call(offered["call_id"])["outcome"] == "pending"
    wait_for(lambda: fast_sim.call(offered["call_id"])["outcome"] == "auto_accepted")
    call = fast_sim.call(offered["call_id"])
    assert call["decided_at"] - call["offered_at"] == pytest.approx(1.0, abs=0.2)
    api = Api(fast_sim)
    late = api.post("call/accept_inbound", api.token(), {"channel_id": offered["channel_id"]})
    assert late["errcode"] == 70130


def test_caller_hang_up_during_the_hold_is_70130(pbx_sim: SimulatorThread) -> None:
    made = requests.post(
        f"{pbx_sim.base_url}/_sim/calls",
        json={"from": "07700900555", "to": "01134960100", "trunk_name": "register-bt"},
        timeout=5,
    )
    assert made.status_code == 201
    offered = made.json()
    assert pbx_sim.hangup(offered["call_id"])
    assert pbx_sim.call(offered["call_id"])["outcome"] == "hung_up"
    api = Api(pbx_sim)
    answer = api.post("call/accept_inbound", api.token(), {"channel_id": offered["channel_id"]})
    assert answer["errcode"] == 70130


def test_scheduled_hang_up(pbx_sim: SimulatorThread) -> None:
    offered = pbx_sim.inject(hangup_after=0.2)
    wait_for(lambda: pbx_sim.call(offered["call_id"])["outcome"] == "hung_up", timeout=1.0)


def test_call_query_and_trunk_monitor(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    token = api.token()
    offered = pbx_sim.inject()
    [live] = api.get("call/query", token, call_id=offered["call_id"])["data"]
    assert live["members"][0]["inbound"]["member_status"] == "ALERT"
    assert api.get("call/query", token)["errcode"] == 40002  # exactly one selector is required

    update = {"trunk_monitor_list": [{"trunk_id": 2, "name": "register-bt", "enb_call_status": 0}]}
    assert api.post("trunk_status_monitor/update", token, update)["errcode"] == 0
    settings = api.get("trunk_status_monitor/list", token)["data"]
    assert {key: settings[1][key] for key in ("trunk_id", "name", "enb_call_status")} == {
        "trunk_id": 2,
        "name": "register-bt",
        "enb_call_status": 0,
    }
    bad = {"trunk_monitor_list": [{"trunk_id": 99}]}
    assert api.post("trunk_status_monitor/update", token, bad)["errcode"] == 40002
    # The read-back is a paged list; the PBX has no trunk_status_monitor/query.
    page = api.get("trunk_status_monitor/list", token, page=2, page_size=2)
    assert page["total_number"] == len(settings) > 2
    assert [item["trunk_id"] for item in page["data"]] == [s["trunk_id"] for s in settings[2:4]]
    assert api.get("trunk_status_monitor/query", token)["errcode"] != 0


# ----------------------------------------------------------------------------- WebSocket


async def _subscribed(
    session: aiohttp.ClientSession, sim: SimulatorThread, token: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(f"{sim.ws_url}?access_token={token}", headers=UA)
    await ws.send_str(json.dumps({"topic_list": [30016, 30011, 30012]}))
    assert json.loads(await ws.receive_str(timeout=2)) == {"errcode": 0, "errmsg": "SUCCESS"}
    return ws


def test_websocket_subscribe_heartbeat_and_30016(pbx_sim: SimulatorThread) -> None:
    token = Api(pbx_sim).token()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await _subscribed(session, pbx_sim, token)
            await ws.send_str("heartbeat")
            assert await ws.receive_str(timeout=2) == "heartbeat response"
            await ws.send_str(json.dumps({"topic_list": "all"}))
            assert json.loads(await ws.receive_str(timeout=2))["errcode"] == 40002

            made = await session.post(
                f"{pbx_sim.base_url}/_sim/calls",
                json={"from": "+447700900123", "to": "02079460000", "trunk_name": "peer-to-41"},
            )
            offered = await made.json()
            event_type, msg = decode(await ws.receive_str(timeout=2))
            assert event_type == 30016
            assert msg["call_id"] == offered["call_id"]
            assert msg["members"][0]["inbound"] == {
                "from": "+447700900123",
                "to": "02079460000",
                "trunk_name": "peer-to-41",
                "channel_id": offered["channel_id"],
                "member_status": "ALERT",
                "call_path": "",
            }
            await ws.close()

    asyncio.run(scenario())
    [handshake] = pbx_sim.log("subscribe")
    assert handshake["http_status"] == 101


def test_websocket_only_sends_subscribed_events(pbx_sim: SimulatorThread) -> None:
    token = Api(pbx_sim).token()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"{pbx_sim.ws_url}?access_token={token}")
            await ws.send_str(json.dumps({"topic_list": [30012]}))
            await ws.receive_str(timeout=2)
            await asyncio.to_thread(pbx_sim.inject)
            with pytest.raises(asyncio.TimeoutError):
                await ws.receive(timeout=0.3)
            await ws.close()

    asyncio.run(scenario())


def test_websocket_rejects_bad_token_with_401(pbx_sim: SimulatorThread) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{pbx_sim.ws_url}?access_token=nope")
            assert refused.value.status == 401

    asyncio.run(scenario())
    body = requests.get(f"{pbx_sim.ws_url.replace('ws', 'http', 1)}", headers=UA, timeout=5)
    assert body.status_code == 401
    assert body.json()["errcode"] == 10004


def test_websocket_idle_cut_and_drop(pbx_sim: SimulatorThread) -> None:
    pbx_sim.set_faults(idle_timeout=0.5)
    token = Api(pbx_sim).token()

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            # Timed from before the handshake: the PBX's idle timer starts when it accepts,
            # which a loaded machine may report to the client late.
            started = time.monotonic()
            ws = await session.ws_connect(f"{pbx_sim.ws_url}?access_token={token}")
            closing = await ws.receive(timeout=5)  # cut, not left open
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert time.monotonic() - started >= 0.5  # not before the idle time

            kept = await _subscribed(session, pbx_sim, token)
            assert await asyncio.to_thread(pbx_sim.drop_sockets) == 1
            dropped = await kept.receive(timeout=2)
            assert dropped.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)

            pbx_sim.set_faults(refuse_websocket=True)
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{pbx_sim.ws_url}?access_token={token}")
            assert refused.value.status == 503

    asyncio.run(scenario())


def test_call_state_and_cdr_events(fast_sim: SimulatorThread) -> None:
    api = Api(fast_sim)
    token = api.token()

    async def collect(call_id: str, ws: aiohttp.ClientWebSocketResponse) -> list[tuple[int, dict]]:
        events: list[tuple[int, dict]] = []
        while not events or events[-1][0] != 30012:
            event_type, msg = decode(await ws.receive_str(timeout=2))
            if msg["call_id"] == call_id:
                events.append((event_type, msg))
        return events

    async def scenario() -> None:
        async with aiohttp.ClientSession() as session:
            ws = await _subscribed(session, fast_sim, token)
            accepted = await asyncio.to_thread(fast_sim.inject)
            body = {"channel_id": accepted["channel_id"]}
            await asyncio.to_thread(api.post, "call/accept_inbound", token, body)
            events = await collect(accepted["call_id"], ws)
            statuses = [
                [next(iter(m.values()))["member_status"] for m in msg["members"]]
                for kind, msg in events
                if kind == 30011
            ]
            assert statuses == [["ALERT", "RING"], ["ANSWERED", "ANSWER"], ["BYE", "BYE"]]
            cdr = events[-1][1]
            assert (cdr["status"], cdr["type"], cdr["did_number"]) == (
                "ANSWERED",
                "Inbound",
                "02079460000",
            )
            assert cdr["src_trunk_name"] == "peer-to-41"

            refused = await asyncio.to_thread(fast_sim.inject)
            body = {"channel_id": refused["channel_id"]}
            await asyncio.to_thread(api.post, "call/refuse_inbound", token, body)
            events = await collect(refused["call_id"], ws)
            assert [kind for kind, _ in events] == [30016, 30011, 30012]
            assert events[1][1]["members"][0]["inbound"]["member_status"] == "BYE"
            assert events[2][1]["status"] == "NO ANSWER"
            await ws.close()

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- webhook


class _Receiver(BaseHTTPRequestHandler):
    hits: list[tuple[dict[str, str], bytes]]
    failures_left: int

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        if server.failures_left > 0:
            server.failures_left -= 1
            self.send_response(503)
        else:
            server.hits.append((dict(self.headers), body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.hits = []
    server.failures_left = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_webhook_push_is_signed_retried_and_can_duplicate(receiver: Any) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/pbx/webhook"
    receiver.failures_left = 1  # the first attempt fails, the retry must get through
    with SimulatorThread(webhook_url=url, webhook_secret="s3cret") as sim:
        sim.inject()
        wait_for(lambda: len(receiver.hits) == 1)
        headers, body = receiver.hits[0]
        expected = base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode()
        assert headers["X-Signature"] == expected
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"]
        event_type, msg = decode(body.decode())
        assert event_type == 30016
        assert msg["members"][0]["inbound"]["trunk_name"] == "peer-to-41"

        sim.set_faults(webhook_duplicate=True)
        sim.inject()
        wait_for(lambda: len(receiver.hits) == 3)
        assert receiver.hits[1][1] == receiver.hits[2][1]
        assert sim.state()["webhook"]["delivered"] == 3


# ----------------------------------------------------------------------------- faults and control


def test_fault_knobs(pbx_sim: SimulatorThread) -> None:
    api = Api(pbx_sim)
    token = api.token()
    faults = f"{pbx_sim.base_url}/_sim/faults"
    assert requests.post(faults, json={"error_rate": 1.0}, timeout=5).json()["error_rate"] == 1.0
    assert api.post("call/accept_inbound", token, {"channel_id": "x"})["errcode"] == -2
    assert api.get("trunk/list", token)["errcode"] == 0  # error_rate only hits call/*

    pbx_sim.set_faults(error_rate=0.0, http_500_rate=1.0)
    assert requests.get(api.root + "trunk/list", headers=UA, timeout=5).status_code == 500
    pbx_sim.set_faults(http_500_rate=0.0, non_json_rate=1.0)
    html = requests.get(api.root + "trunk/list", headers=UA, timeout=5)
    assert html.status_code == 200
    assert html.text.startswith("<html>")

    pbx_sim.set_faults(non_json_rate=0.0, latency_ms=300)
    started = time.monotonic()
    api.get("trunk/list", token)
    assert time.monotonic() - started >= 0.3

    assert requests.post(faults, json={"nope": 1}, timeout=5).status_code == 400
    assert requests.post(faults, json={"error_rate": 2}, timeout=5).status_code == 400


def test_ignore_refuse_fault_answers_success_but_routes_the_call() -> None:
    with SimulatorThread(call_rate=0.0, answer_probability=1.0, **FAST_CALLS) as sim:
        api = Api(sim)
        token = api.token()
        assert sim.set_faults(ignore_refuse=True)["ignore_refuse"] is True
        offered = sim.inject()
        answer = api.post("call/refuse_inbound", token, {"channel_id": offered["channel_id"]})
        assert (answer["errcode"], answer["call_id"]) == (0, offered["call_id"])
        assert sim.call(offered["call_id"])["outcome"] == "accepted"  # what the PBX really did
        wait_for(lambda: sim.call(offered["call_id"])["answered_at"] is not None)

        sim.set_faults(ignore_refuse=False)
        second = sim.inject()
        api.post("call/refuse_inbound", token, {"channel_id": second["channel_id"]})
        assert sim.call(second["call_id"])["outcome"] == "refused"


def test_control_api_validation_log_and_listing(pbx_sim: SimulatorThread) -> None:
    base = f"{pbx_sim.base_url}/_sim"
    bad = requests.post(f"{base}/calls", data="{not json", timeout=5)
    assert bad.status_code == 400
    assert "JSON" in bad.json()["error"]
    missing = requests.post(f"{base}/calls", json={"from": "1"}, timeout=5)
    assert missing.status_code == 400
    assert "to" in missing.json()["error"]
    assert requests.get(f"{base}/calls/1.1", timeout=5).status_code == 404

    offered = pbx_sim.inject()
    listed = requests.get(f"{base}/calls", timeout=5).json()["calls"]
    assert [call["call_id"] for call in listed] == [offered["call_id"]]
    one = requests.get(f"{base}/calls/{offered['call_id']}", timeout=5).json()
    assert one["trunk_name"] == "peer-to-41"

    api = Api(pbx_sim)
    api.token()
    first = pbx_sim.log()[-1]["seq"]
    api.get("trunk/list", "garbage")
    entries = requests.get(f"{base}/log", params={"since": first}, timeout=5).json()["entries"]
    assert [(e["endpoint"], e["errcode"]) for e in entries] == [("trunk/list", 10004)]
    assert requests.get(f"{base}/state", timeout=5).json()["calls"] == 1


def test_generator_offers_varied_calls() -> None:
    with SimulatorThread(call_rate=40.0, seed=7, **FAST_CALLS) as sim:
        wait_for(lambda: sim.state()["calls"] >= 12)
        calls = requests.get(f"{sim.base_url}/_sim/calls", timeout=5).json()["calls"]
    trunks = {"peer-to-41": "02079460000", "register-bt": "01134960100", "sip-gamma": "01614960200"}
    assert {call["trunk_name"] for call in calls} <= set(trunks)
    assert all(call["to"] == trunks[call["trunk_name"]] for call in calls)
    assert len({call["from"] for call in calls}) > 3
    assert len({call["call_id"] for call in calls}) == len(calls)
