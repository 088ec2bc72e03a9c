"""The Yeastar REST client against the simulator over real sockets (no mocking of requests)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.core.cache.backends.locmem import LocMemCache

from screening.pbx.client import (
    TOKEN_ERRCODES,
    PbxAuthError,
    PbxClient,
    PbxError,
    PbxNotConfigured,
    PbxResponse,
    PbxTransportError,
)
from screening.simulator import SimulatorThread


@pytest.fixture
def cache() -> Iterator[LocMemCache]:
    """A private, empty cache per test (LocMemCache shares storage by name: name it uniquely)."""
    store = LocMemCache(f"test-client-{uuid.uuid4().hex}", {})
    yield store
    store.clear()


@pytest.fixture
def sim(pbx_sim: SimulatorThread) -> SimulatorThread:
    """The default simulator from conftest; tests needing other knobs start their own."""
    return pbx_sim


def make_client(sim: SimulatorThread, cache: LocMemCache, **kwargs: Any) -> PbxClient:
    kwargs.setdefault("timeout", 2.0)
    secret = kwargs.pop("client_secret", sim.client_secret)
    return PbxClient(sim.base_url, sim.client_id, secret, cache=cache, **kwargs)


def token_calls(sim: SimulatorThread) -> list[dict[str, Any]]:
    return [e for e in sim.log() if e["endpoint"] in {"get_token", "refresh_token"}]


def endpoints(sim: SimulatorThread) -> list[tuple[str, int | None]]:
    return [(e["endpoint"], e["errcode"]) for e in sim.log()]


# --- tokens -------------------------------------------------------------------------------------


def test_token_obtained_once_and_reused(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache)
    for _ in range(3):
        call = sim.inject()
        response = client.accept_inbound(call["channel_id"])
        assert isinstance(response, PbxResponse)
        assert response.data["call_id"] == call["call_id"]
        assert response.endpoint == "call/accept_inbound"
        assert response.round_trip_ms > 0
        assert sim.call(call["call_id"])["outcome"] == "accepted"
    # The simulator answers 400 without a User-Agent, so every request carried one.
    assert endpoints(sim) == [("get_token", 0)] + [("call/accept_inbound", 0)] * 3
    assert sim.live_tokens() == 1


def test_clients_share_the_token_through_the_cache(
    sim: SimulatorThread, cache: LocMemCache
) -> None:
    first, second = make_client(sim, cache), make_client(sim, cache)
    assert first.access_token() == second.access_token()
    assert len(sim.log("get_token")) == 1


def test_revoked_token_is_renewed_once_and_the_request_retried(
    sim: SimulatorThread, cache: LocMemCache
) -> None:
    client = make_client(sim, cache)
    old = client.access_token()
    sim.revoke_tokens()
    call = sim.inject()
    client.accept_inbound(call["channel_id"])
    assert sim.call(call["call_id"])["outcome"] == "accepted"
    log = endpoints(sim)
    assert log[1] == ("call/accept_inbound", 10004)
    assert log[-1] == ("call/accept_inbound", 0)
    # The refresh token died with the revocation, so the client logs in afresh: one new token.
    renewals = log[2:-1]
    assert renewals in ([("refresh_token", 0)], [("refresh_token", 10004), ("get_token", 0)])
    assert client.access_token() != old
    assert sim.live_tokens() == 1


def test_token_renewed_ahead_of_expiry_with_refresh_token(cache: LocMemCache) -> None:
    with SimulatorThread(call_rate=0.0, token_ttl=1.0) as sim:
        client = make_client(sim, cache)
        first = client.access_token()
        assert client.access_token() == first
        time.sleep(0.6)  # past half the lifetime: renew ahead
        second = client.access_token()
        assert second != first
        assert [(e["endpoint"], e["errcode"]) for e in token_calls(sim)] == [
            ("get_token", 0),
            ("refresh_token", 0),
        ]
        call = sim.inject()
        client.accept_inbound(call["channel_id"])
        assert sim.live_tokens() == 1


def test_forget_token_renews_on_next_use(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache)
    first = client.access_token()
    client.forget_token("not-the-current-token")
    assert client.access_token() == first
    client.forget_token(first)
    assert client.access_token() != first
    assert [e["endpoint"] for e in token_calls(sim)] == ["get_token", "refresh_token"]


def test_twenty_parallel_accepts_use_one_token(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache)
    calls = [sim.inject() for _ in range(20)]
    start = threading.Barrier(20)

    def accept(call: dict[str, Any]) -> str:
        start.wait()
        return client.accept_inbound(call["channel_id"]).data["call_id"]

    with ThreadPoolExecutor(max_workers=20) as pool:
        answered = list(pool.map(accept, calls))
    assert answered == [call["call_id"] for call in calls]
    assert len(sim.log("get_token")) == 1
    assert sim.live_tokens() == 1
    assert all(sim.call(call["call_id"])["outcome"] == "accepted" for call in calls)


def test_parallel_clients_in_separate_objects_use_one_token(
    sim: SimulatorThread, cache: LocMemCache
) -> None:
    """Like separate processes sharing Redis: one client object per thread, one cache."""
    start = threading.Barrier(10)

    def token(_: int) -> str:
        client = make_client(sim, cache)
        start.wait()
        return client.access_token()

    with ThreadPoolExecutor(max_workers=10) as pool:
        tokens = set(pool.map(token, range(10)))
    assert len(tokens) == 1
    assert len(sim.log("get_token")) == 1


def test_token_cap_is_an_error_not_a_lockout(cache: LocMemCache) -> None:
    with SimulatorThread(call_rate=0.0, max_tokens=1) as sim:
        make_client(sim, cache).access_token()
        # Another "process" without the shared cache hits the cap.
        other = make_client(sim, LocMemCache(f"other-{uuid.uuid4().hex}", {}))
        with pytest.raises(PbxError) as info:
            other.access_token()
        assert not isinstance(info.value, PbxAuthError)
        assert info.value.errcode == 60002
        assert other.auth_lockout() is None
        # A second try right away is answered from the back-off record, not by the PBX.
        with pytest.raises(PbxError):
            other.access_token()
        assert len(sim.log("get_token")) == 2


# --- authentication failures --------------------------------------------------------------------


def test_wrong_secret_asks_the_pbx_once_then_locks_out(
    sim: SimulatorThread, cache: LocMemCache
) -> None:
    client = make_client(sim, cache, client_secret="wrong-secret")
    call = sim.inject()
    for _ in range(4):
        with pytest.raises(PbxAuthError) as info:
            client.accept_inbound(call["channel_id"])
        assert info.value.errcode == -1
    assert endpoints(sim) == [("get_token", -1)]
    reason = client.auth_lockout()
    assert reason is not None
    assert "wrong-secret" not in reason
    # Fixed credentials are a different cache key: no lockout for them.
    good = make_client(sim, cache)
    assert good.auth_lockout() is None
    good.accept_inbound(call["channel_id"])
    # An explicit reset allows exactly one more attempt.
    client.reset_auth_lockout()
    assert client.auth_lockout() is None
    with pytest.raises(PbxAuthError):
        client.access_token()
    with pytest.raises(PbxAuthError):
        client.access_token()
    assert [e["errcode"] for e in sim.log("get_token")] == [-1, 0, -1]


def test_wrong_secret_from_many_threads_is_one_attempt(
    sim: SimulatorThread, cache: LocMemCache
) -> None:
    client = make_client(sim, cache, client_secret="wrong-secret")
    start = threading.Barrier(10)

    def attempt(_: int) -> type[BaseException] | None:
        start.wait()
        try:
            client.access_token()
        except Exception as exc:
            return type(exc)
        return None

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(attempt, range(10)))
    assert outcomes == [PbxAuthError] * 10
    assert len(sim.log("get_token")) == 1


class _LateRefusalCache(LocMemCache):
    """A cache in which another worker's login fails just before this one takes the lock:
    after this worker has looked for a refusal and found none."""

    def __init__(self, name: str, refuse: Any) -> None:
        super().__init__(name, {})
        self.refuse = refuse

    def add(self, key: str, *args: Any, **kwargs: Any) -> bool:
        if ":token-lock:" in key and self.refuse is not None:
            refuse, self.refuse = self.refuse, None
            refuse(self)
        return super().add(key, *args, **kwargs)


@pytest.mark.parametrize("refusal", ["wrong secret", "token cap"])
def test_a_refusal_recorded_between_look_and_lock_stops_the_login(refusal: str) -> None:
    with SimulatorThread(call_rate=0.0, max_tokens=1) as sim:
        if refusal == "token cap":
            make_client(sim, LocMemCache(f"cap-{uuid.uuid4().hex}", {})).access_token()
        secret = "wrong-secret" if refusal == "wrong secret" else sim.client_secret
        expected = PbxAuthError if refusal == "wrong secret" else PbxError

        def other_worker_fails(cache: LocMemCache) -> None:
            with pytest.raises(expected):
                make_client(sim, cache, client_secret=secret).access_token()

        cache = _LateRefusalCache(f"late-{uuid.uuid4().hex}", other_worker_fails)
        before = len(sim.log("get_token"))
        with pytest.raises(expected):
            make_client(sim, cache, client_secret=secret).access_token()
        # Only the other worker asked the PBX; this one read its refusal under the lock.
        assert len(sim.log("get_token")) == before + 1


def test_blocked_ip_is_an_auth_error(cache: LocMemCache) -> None:
    with SimulatorThread(call_rate=0.0, max_auth_failures=1) as sim:
        wrong = make_client(sim, cache, client_secret="wrong-secret")
        with pytest.raises(PbxAuthError):
            wrong.access_token()
        # The PBX now blocks this IP; the right credentials learn it once, then stop asking.
        good = make_client(sim, cache)
        for _ in range(3):
            with pytest.raises(PbxAuthError) as info:
                good.access_token()
            assert info.value.errcode == 70004
        assert [e["errcode"] for e in sim.log("get_token")] == [-1, 70004]


# --- deadlines and transport failures -----------------------------------------------------------


def test_deadline_in_the_past_sends_nothing(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache)
    call = sim.inject()
    with pytest.raises(PbxTransportError) as info:
        client.accept_inbound(call["channel_id"], deadline=time.time() - 0.1)
    assert info.value.timed_out
    assert info.value.reason == "no time left in the window"
    assert sim.log() == []  # not even get_token
    client.access_token()
    with pytest.raises(PbxTransportError):
        client.refuse_inbound(call["channel_id"], deadline=time.time())
    assert [e["endpoint"] for e in sim.log()] == ["get_token"]


def test_deadline_bounds_the_request(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache, timeout=5.0)
    client.access_token()
    sim.set_faults(latency_ms=800)
    call = sim.inject()
    started = time.monotonic()
    with pytest.raises(PbxTransportError) as info:
        client.accept_inbound(call["channel_id"], deadline=time.time() + 0.2)
    assert info.value.timed_out
    assert time.monotonic() - started < 0.6


def test_token_acquisition_counts_against_the_deadline(
    sim: SimulatorThread, cache: LocMemCache
) -> None:
    sim.set_faults(latency_ms=800)
    client = make_client(sim, cache, timeout=5.0)
    started = time.monotonic()
    with pytest.raises(PbxTransportError) as info:
        client.accept_inbound("PJSIP/x", deadline=time.time() + 0.2)
    assert info.value.timed_out
    assert info.value.endpoint == "get_token"
    assert time.monotonic() - started < 0.6


def test_client_timeout(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache, timeout=0.2)
    sim.set_faults(latency_ms=800)
    with pytest.raises(PbxTransportError) as info:
        client.access_token()
    assert info.value.timed_out


@pytest.mark.parametrize(
    ("fault", "reason"), [("http_500_rate", "HTTP 500"), ("non_json_rate", "answer is not JSON")]
)
def test_http_error_and_non_json_are_transport_errors(
    sim: SimulatorThread, cache: LocMemCache, fault: str, reason: str
) -> None:
    client = make_client(sim, cache)
    client.access_token()
    sim.set_faults(**{fault: 1.0})
    call = sim.inject()
    with pytest.raises(PbxTransportError) as info:
        client.accept_inbound(call["channel_id"])
    assert info.value.reason == reason
    assert not info.value.timed_out
    assert [e["endpoint"] for e in sim.log()] == ["get_token", "call/accept_inbound"]


def test_connection_refused_is_a_transport_error(cache: LocMemCache) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = PbxClient(f"http://127.0.0.1:{port}", "id", "secret", cache=cache, timeout=1.0)
    with pytest.raises(PbxTransportError) as info:
        client.access_token()
    assert not info.value.timed_out
    assert info.value.endpoint == "get_token"


def test_internal_error_is_a_pbx_error_without_retry(
    sim: SimulatorThread, cache: LocMemCache
) -> None:
    client = make_client(sim, cache)
    sim.set_faults(error_rate=1.0)
    call = sim.inject()
    with pytest.raises(PbxError) as info:
        client.accept_inbound(call["channel_id"])
    assert (info.value.errcode, info.value.errmsg) == (-2, "INTERNAL SERVER ERROR")
    assert info.value.endpoint == "call/accept_inbound"
    assert endpoints(sim) == [("get_token", 0), ("call/accept_inbound", -2)]


def test_gone_channel_is_70130(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache)
    call = sim.inject()
    client.refuse_inbound(call["channel_id"])
    assert sim.call(call["call_id"])["outcome"] == "refused"
    with pytest.raises(PbxError) as info:
        client.accept_inbound(call["channel_id"])
    assert info.value.errcode == 70130
    with pytest.raises(PbxError) as info:
        client.accept_inbound("PJSIP/never-existed")
    assert info.value.errcode == 70130


def test_parameter_error_is_not_a_token_error(sim: SimulatorThread, cache: LocMemCache) -> None:
    assert 40002 not in TOKEN_ERRCODES
    client = make_client(sim, cache)
    with pytest.raises(PbxError) as info:
        client.accept_inbound("")
    assert info.value.errcode == 40002
    assert info.value.detail["invalid_param_list"][0]["field"] == "channel_id"
    assert endpoints(sim) == [("get_token", 0), ("call/accept_inbound", 40002)]


def test_secrets_stay_out_of_logs_and_errors(
    cache: LocMemCache, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="screening.pbx")
    with SimulatorThread(call_rate=0.0, token_ttl=1.0) as sim:
        client = make_client(sim, cache)
        client.accept_inbound(sim.inject()["channel_id"])
        time.sleep(0.6)
        client.accept_inbound(sim.inject()["channel_id"])  # renews through refresh_token
        token = client.access_token()
    with pytest.raises(PbxTransportError) as info:  # the simulator is gone: connection refused
        client.accept_inbound("PJSIP/x")
    assert token not in str(info.value)
    assert token not in info.value.reason
    assert info.value.__cause__ is None
    assert caplog.records
    for secret in (sim.client_secret, token):
        assert secret not in caplog.text
        assert secret not in repr(client)


# --- endpoints ----------------------------------------------------------------------------------


def test_call_query(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache)
    call = sim.inject()
    live = client.call_query(call_id=call["call_id"])
    assert [item["call_id"] for item in live] == [call["call_id"]]
    assert client.call_query(type="inbound")
    with pytest.raises(ValueError, match="exactly one"):
        client.call_query()
    with pytest.raises(ValueError, match="exactly one"):
        client.call_query(call_id="1", type="inbound")


def test_trunk_list_follows_pages(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache)
    everything = client.trunk_list()
    assert len(everything) >= 2
    assert client.trunk_list(page_size=1) == everything
    pages = [e["query"]["page"] for e in sim.log("trunk/list")]
    assert pages[-len(everything) :] == [str(n) for n in range(1, len(everything) + 1)]


def test_update_trunk_monitor(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache)
    trunk = client.trunk_list()[0]
    monitor = {"trunk_id": trunk["id"], "enb_call_status": 1, "enb_control_inbound_call": 1}
    assert client.update_trunk_monitor([monitor]).data["errcode"] == 0
    assert sim.log("trunk_status_monitor/update")[0]["body"] == {"trunk_monitor_list": [monitor]}
    with pytest.raises(PbxError) as info:
        client.update_trunk_monitor([{"trunk_id": 999_999}])
    assert info.value.errcode == 40002


def test_del_token(sim: SimulatorThread, cache: LocMemCache) -> None:
    client = make_client(sim, cache)
    client.del_token()  # nothing cached: nothing sent
    assert sim.log() == []
    first = client.access_token()
    assert sim.live_tokens() == 1
    client.del_token()
    assert sim.live_tokens() == 0
    assert client.access_token() != first
    assert [e["endpoint"] for e in sim.log()] == ["get_token", "del_token", "get_token"]


def test_websocket_url() -> None:
    cache = LocMemCache("unused", {})
    plain = PbxClient("http://10.0.0.5:80/", "id", "secret", cache=cache)
    assert plain.websocket_url("a/b+c") == (
        "ws://10.0.0.5:80/openapi/v1.0/subscribe?access_token=a/b%2Bc"
    )
    tls = PbxClient("https://pbx.example:8088", "id", "secret", cache=cache)
    assert (
        tls.websocket_url("tok") == "wss://pbx.example:8088/openapi/v1.0/subscribe?access_token=tok"
    )


def test_from_settings(settings: Any) -> None:
    settings.PBX_BASE_URL = ""
    settings.PBX_CLIENT_ID = "id"
    settings.PBX_CLIENT_SECRET = ""
    with pytest.raises(PbxNotConfigured, match="PBX_BASE_URL, PBX_CLIENT_SECRET"):
        PbxClient.from_settings()
    settings.PBX_BASE_URL = "https://pbx.example:8088"
    settings.PBX_CLIENT_SECRET = "secret"
    settings.PBX_VERIFY_TLS = False
    client = PbxClient.from_settings()
    assert client.base_url == "https://pbx.example:8088"
    assert client.user_agent
