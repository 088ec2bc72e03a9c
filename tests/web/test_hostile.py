"""Hostile input, property-based: the webhook, the decide endpoints and what browsers can send on
the operator WebSocket. No 500, no crash, no database change from rejected input, a clear error.

(The event parser itself is fuzzed in tests/pbx/test_events.py.)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client, override_settings
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from screening.consumers import OperatorConsumer
from screening.models import AuditEvent, Call, CallStatus, Trunk
from tests.support.live import make_user

SECRET = "0123456789abcdef0123456789abcdef"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
pytestmark = pytest.mark.django_db(transaction=True)


def db_state() -> tuple[int, int, list[tuple[int, str, int]]]:
    calls = list(Call.objects.values_list("pk", "status", "version"))
    return Call.objects.count(), AuditEvent.objects.count(), calls


def sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mangled_frames(draw: st.DrawFn) -> bytes:
    """Frames that look like a 30016 with one part broken, or plain garbage."""
    kind = draw(st.sampled_from(["garbage", "json", "frame"]))
    if kind == "garbage":
        return draw(st.binary(max_size=300))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    inbound = {
        "from": draw(st.one_of(st.text(max_size=70), json_values)),
        "to": "2002",
        "trunk_name": draw(st.one_of(st.text(max_size=140), st.just("peer-to-41"))),
        "channel_id": draw(st.one_of(st.text(max_size=300), json_values)),
        "member_status": "ALERT",
    }
    msg = {
        "call_id": draw(st.one_of(st.text(max_size=80), json_values)),
        "members": [{"inbound": inbound}],
    }
    frame = {
        "type": draw(st.sampled_from([30016, "30016", 30011, 30012, -1, None])),
        "sn": draw(st.text(max_size=10)),
        "msg": json.dumps(msg) if draw(st.booleans()) else msg,
    }
    return json.dumps(frame).encode()


@override_settings(PBX_WEBHOOK_SECRET=SECRET)
@FUZZ
@given(body=mangled_frames(), signed=st.booleans(), signature=st.text(max_size=60))
def test_the_webhook_never_fails_on_hostile_bodies(
    body: bytes, signed: bool, signature: str
) -> None:
    before = db_state()
    header = sign(body) if signed else signature
    answer = Client().post(
        "/pbx/webhook", body, content_type="application/json", HTTP_X_SIGNATURE=header
    )
    assert answer.status_code in {200, 400, 403, 413}, answer.content[:300]
    payload = answer.json()
    if answer.status_code == 200:
        assert payload == {"ok": True}
        return
    assert payload["ok"] is False, payload
    assert payload["error"], payload
    assert db_state() == before
    if not signed and signature != sign(body):
        assert answer.status_code == 403


@pytest.fixture
def operator_client() -> Client:
    client = Client()
    client.force_login(make_user("fuzzop"))
    return client


@pytest.fixture
def finished_call() -> Call:
    trunk = Trunk.objects.create(name="peer-to-41")
    now = timezone.now()
    return Call.objects.create(
        pbx_call_id="1.1",
        channel_id="PJSIP/x-1",
        trunk=trunk,
        received_at=now - timedelta(seconds=30),
        deadline=now - timedelta(seconds=20),
        status=CallStatus.EXPIRED,
    )


@FUZZ
@given(
    pk=st.one_of(st.integers(min_value=0, max_value=10**30), st.just(-1)),
    action=st.one_of(st.sampled_from(["accept", "refuse", "ACCEPT", ""]), st.text(max_size=40)),
    method=st.sampled_from(["post", "get", "put", "delete"]),
    body=st.binary(max_size=200),
    existing=st.booleans(),
)
def test_decide_endpoints_answer_every_hostile_request_cleanly(
    operator_client: Client,
    finished_call: Call,
    pk: int,
    action: str,
    method: str,
    body: bytes,
    existing: bool,
) -> None:
    before = db_state()
    target = finished_call.pk if existing else pk
    url = f"/calls/{target}/{quote(action, safe='')}"
    answer = operator_client.generic(
        method.upper(), url, body, content_type="application/octet-stream"
    )
    assert answer.status_code in {403, 404, 405, 409}, (
        url,
        answer.status_code,
        answer.content[:300],
    )
    if answer.headers.get("Content-Type", "").startswith("application/json"):
        assert answer.json()["error"]
    assert db_state() == before  # nothing rejected changed anything


def _strict_json(text: str) -> dict[str, Any]:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    value = json.loads(text, parse_constant=no_constants)
    assert isinstance(value, dict)
    return value


client_messages = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=100),
    json_values.map(json.dumps),
    st.builds(
        lambda kind, t, extra: json.dumps({"type": kind, "t": t, **extra}),
        st.sampled_from(["ping", "snapshot", "call", "decide", "", "PING"]),
        st.one_of(json_values, st.sampled_from([float("nan"), float("inf"), 10**400, True])),
        st.dictionaries(st.text(max_size=6), json_values, max_size=3),
    ),
    st.just("x" * 5000),
)


@FUZZ
@given(messages=st.lists(client_messages, min_size=1, max_size=6))
def test_the_operator_socket_answers_every_hostile_message(
    finished_call: Call, messages: list[str | bytes]
) -> None:
    user = make_user("wsfuzz") if not _users() else _users()[0]
    before = db_state()

    async def scenario() -> None:
        communicator = WebsocketCommunicator(OperatorConsumer.as_asgi(), "/ws/operator/")
        communicator.scope["user"] = user
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        assert _strict_json(await communicator.receive_from(timeout=5))["type"] == "snapshot"
        for message in messages:
            key = "bytes" if isinstance(message, bytes) else "text"
            await communicator.send_input({"type": "websocket.receive", key: message})
            reply = _strict_json(await communicator.receive_from(timeout=5))
            assert reply["type"] in {"error", "pong", "snapshot"}, reply
            if reply["type"] == "error":
                assert reply["error"]
            if reply["type"] == "pong":
                t = reply["t"]
                assert t is None or (isinstance(t, int | float) and not isinstance(t, bool))
        await communicator.disconnect()

    async_to_sync(scenario)()
    assert db_state() == before


def _users() -> list[Any]:
    from django.contrib.auth import get_user_model

    return list(get_user_model().objects.filter(username="wsfuzz"))
