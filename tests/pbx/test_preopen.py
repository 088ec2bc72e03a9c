"""Decisions on connections opened ahead (screening/pbx/preopen.py), against the simulator behind
TLS and a counting proxy (screening/simulator/netdelay.py), over real sockets.

The proxy counts the connections it carries: each is one TCP and one TLS handshake with the PBX.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from screening import runtime
from screening.models import CallStatus, Decision
from screening.pbx import answers, preopen
from screening.pbx.client import PbxClient
from screening.simulator import SimulatorThread
from screening.simulator.netdelay import DelayProxyThread
from screening.simulator.tls import Certificates, make_certificates
from tests.support.live import until, wait_for


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pbx-tls"))


@pytest.fixture
def tls_sim(certs: Certificates) -> Iterator[SimulatorThread]:
    with SimulatorThread(call_rate=0.0, ssl_context=certs.server_context()) as sim:
        yield sim


@pytest.fixture
def proxy(tls_sim: SimulatorThread) -> Iterator[DelayProxyThread]:
    port = int(tls_sim.base_url.rsplit(":", 1)[1])
    with DelayProxyThread("127.0.0.1", port, 0.0) as counting:
        yield counting


@pytest.fixture(autouse=True)
def _fresh_pool() -> Iterator[None]:
    preopen.pool.close_all()
    preopen.pool.counts.clear()
    yield
    preopen.pool.close_all()
    preopen.pool.counts.clear()


@pytest.fixture
def pbx_tls(
    tls_sim: SimulatorThread, proxy: DelayProxyThread, certs: Certificates, settings: Any
) -> SimulatorThread:
    """This process's PBX settings at the simulator, through the proxy, verified by its CA."""
    settings.PBX_BASE_URL = f"https://127.0.0.1:{proxy.port}"
    settings.PBX_CLIENT_ID = tls_sim.client_id
    settings.PBX_CLIENT_SECRET = tls_sim.client_secret
    settings.PBX_VERIFY_TLS = str(certs.ca)
    settings.PBX_PREOPEN_CONNECTIONS = 20
    return tls_sim


def client_with_token() -> PbxClient:
    client = PbxClient.from_settings()
    client.access_token()  # the shared token, as the listener holds it long before any call
    return client


def accepts(sim: SimulatorThread, channel_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in sim.log("call/accept_inbound")
        if (e.get("body") or {}).get("channel_id") == channel_id
    ]


@pytest.mark.parametrize("verify", ["ca", False])
def test_a_decision_goes_out_on_the_connection_opened_for_its_call(
    pbx_tls: SimulatorThread,
    proxy: DelayProxyThread,
    certs: Certificates,
    settings: Any,
    verify: str | bool,
) -> None:
    settings.PBX_VERIFY_TLS = str(certs.ca) if verify == "ca" else False
    client = client_with_token()
    sent = pbx_tls.inject()
    deadline = time.time() + 8

    assert preopen.warm_up(sent["channel_id"], deadline)
    handshakes = proxy.connections
    answer = answers.ask(sent["channel_id"], Decision.ACCEPT, deadline, client)

    assert answer.status == CallStatus.ACCEPTED
    assert proxy.connections == handshakes  # no new connection for the decision
    assert len(accepts(pbx_tls, sent["channel_id"])) == 1
    assert pbx_tls.call(sent["call_id"])["outcome"] == "accepted"
    assert preopen.pool.counts["used"] == 1
    wait_for(lambda: proxy.open_now == 0, what="the used connection to close")


def test_with_the_switch_off_each_decision_opens_its_own_connection(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread, settings: Any
) -> None:
    settings.PBX_PREOPEN_CONNECTIONS = 0
    client = client_with_token()
    sent = pbx_tls.inject()
    deadline = time.time() + 8

    assert not preopen.warm_up(sent["channel_id"], deadline)
    handshakes = proxy.connections
    answer = answers.ask(sent["channel_id"], Decision.REFUSE, deadline, client)

    assert answer.status == CallStatus.REFUSED
    assert proxy.connections == handshakes + 1
    assert pbx_tls.call(sent["call_id"])["outcome"] == "refused"


def test_a_call_without_a_warm_connection_is_sent_as_before(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread
) -> None:
    client = client_with_token()
    warmed, cold = pbx_tls.inject(), pbx_tls.inject("07700900999")
    deadline = time.time() + 8
    assert preopen.warm_up(warmed["channel_id"], deadline)
    handshakes = proxy.connections

    answer = answers.ask(cold["channel_id"], Decision.ACCEPT, deadline, client)

    assert answer.status == CallStatus.ACCEPTED
    assert proxy.connections == handshakes + 1  # its own connection; the other call's kept
    assert len(preopen.pool) == 1


def test_a_decision_during_the_handshake_waits_for_it_rather_than_opening_another(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread
) -> None:
    client = client_with_token()
    sent = pbx_tls.inject()
    deadline = time.time() + 8
    proxy.proxy.delay = 0.1  # a handshake that takes a while
    handshakes = proxy.connections
    warming = threading.Thread(target=preopen.warm_up, args=(sent["channel_id"], deadline))
    warming.start()
    wait_for(lambda: proxy.connections == handshakes + 1, what="the handshake to start")

    answer = answers.ask(sent["channel_id"], Decision.ACCEPT, deadline, client)
    warming.join()

    assert answer.status == CallStatus.ACCEPTED
    assert proxy.connections == handshakes + 1
    assert preopen.pool.counts["used"] == 1
    assert len(accepts(pbx_tls, sent["channel_id"])) == 1


def test_a_stale_warm_connection_is_replaced_and_the_decision_sent_once(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread
) -> None:
    client = client_with_token()
    sent = pbx_tls.inject()
    deadline = time.time() + 8
    assert preopen.warm_up(sent["channel_id"], deadline)
    assert proxy.drop() > 0  # the PBX (or a middlebox) closed the idle connection
    wait_for(lambda: proxy.open_now == 0, what="the proxy to drop the connection")
    handshakes = proxy.connections

    answer = answers.ask(sent["channel_id"], Decision.ACCEPT, deadline, client)

    assert answer.status == CallStatus.ACCEPTED
    assert preopen.pool.counts["stale"] == 1
    assert proxy.connections == handshakes + 1  # a fresh connection, opened before sending
    assert len(accepts(pbx_tls, sent["channel_id"])) == 1
    assert pbx_tls.call(sent["call_id"])["outcome"] == "accepted"


@pytest.mark.parametrize("fault", ["timeout", "http_500"])
def test_a_failure_after_the_request_left_is_not_retried(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread, fault: str
) -> None:
    client = client_with_token()
    sent = pbx_tls.inject()
    assert preopen.warm_up(sent["channel_id"], time.time() + 8)
    handshakes = proxy.connections
    if fault == "timeout":
        pbx_tls.set_faults(latency_ms=1500)  # the PBX answers after our deadline
        deadline = time.time() + 0.8
    else:
        pbx_tls.set_faults(http_500_rate=1.0)
        deadline = time.time() + 8

    answer = answers.ask(sent["channel_id"], Decision.ACCEPT, deadline, client)

    assert answer.status == CallStatus.FAILED
    if fault == "timeout":
        assert "no answer from the PBX in time" in answer.message
    else:
        assert "HTTP 500" in answer.message
    assert preopen.pool.counts["used"] == 1
    # Neither a second request on a fresh connection nor a second decision at the PBX.
    time.sleep(1.0 if fault == "timeout" else 0.1)
    assert proxy.connections == handshakes
    assert len(accepts(pbx_tls, sent["channel_id"])) == 1


def test_a_certificate_refused_at_warm_up_leaves_the_decision_to_report_it(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread, settings: Any
) -> None:
    client_with_token()  # the token, fetched with the right CA
    settings.PBX_VERIFY_TLS = True  # the public CAs: the simulator's certificate is refused
    client = PbxClient.from_settings()
    sent = pbx_tls.inject()
    deadline = time.time() + 8

    assert not preopen.warm_up(sent["channel_id"], deadline)
    assert preopen.pool.counts["failed"] == 1
    answer = answers.ask(sent["channel_id"], Decision.ACCEPT, deadline, client)

    assert answer.status == CallStatus.FAILED
    assert "CERTIFICATE_VERIFY_FAILED" in answer.message
    assert accepts(pbx_tls, sent["channel_id"]) == []


def test_warm_connections_are_capped_and_closed_when_their_call_ends(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread, settings: Any
) -> None:
    settings.PBX_PREOPEN_CONNECTIONS = 2
    handshakes = proxy.connections
    soon = time.time() + 0.6
    opened = [preopen.warm_up(f"PJSIP/chan-{i}", soon) for i in range(3)]

    assert opened == [True, True, False]
    assert proxy.connections == handshakes + 2
    assert not preopen.warm_up("PJSIP/chan-0", soon)  # one per call
    wait_for(lambda: proxy.open_now == 2, what="the two connections")
    time.sleep(max(0.0, soon - time.time()) + 0.05)
    assert preopen.pool.sweep() == 2  # the calls' windows ended: both closed
    wait_for(lambda: proxy.open_now == 0, what="the warm connections to close")
    assert len(preopen.pool) == 0


def test_tls_session_tickets_are_not_staleness_but_a_drop_is(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread, settings: Any
) -> None:
    """A TLS 1.3 server sends session tickets after the handshake, which makes a fresh
    connection readable: still usable. The peer closing it is seen before anything is sent."""
    sent = pbx_tls.inject()
    assert preopen.warm_up(sent["channel_id"], time.time() + 8)
    time.sleep(0.2)  # the tickets have arrived
    key = preopen.key_for(settings.PBX_BASE_URL, settings.PBX_VERIFY_TLS)
    conn = preopen.pool.take(key, sent["channel_id"], 1.0)
    assert conn is not None
    assert preopen.usable(conn)
    proxy.drop()
    wait_for(lambda: not preopen.usable(conn), what="the drop to be seen")
    conn.close()


def test_no_warm_up_through_a_proxy(
    pbx_tls: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection through an HTTPS proxy is the proxy's to open: decisions go as before."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    preopen._target.cache_clear()
    try:
        assert not preopen.warm_up("PJSIP/any", time.time() + 5)
    finally:
        preopen._target.cache_clear()


def test_handshakes_that_hang_never_take_a_thread_a_decision_needs(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread, settings: Any
) -> None:
    """A burst of calls while the PBX is slow to shake hands: the connections opened ahead wait
    in a pool of their own, and a decision's request still gets a thread at once."""
    settings.PBX_PREOPEN_CONNECTIONS = 100
    burst = runtime.PBX_WORKERS + runtime.PREOPEN_WORKERS
    handshakes = proxy.connections
    proxy.proxy.delay = 30.0  # no handshake completes while the decision is asked for

    async def scenario() -> str:
        layer = InMemoryChannelLayer()
        channel = await layer.new_channel()
        receiving = asyncio.create_task(preopen._receive(layer, channel))
        deadline = time.time() + 8
        for i in range(burst):
            await layer.send(channel, preopen.message(f"PJSIP/burst-{i}", deadline))
        try:
            await until(
                lambda: proxy.connections >= handshakes + runtime.PREOPEN_WORKERS,
                what="the handshakes to hang",
            )
            return await asyncio.wait_for(runtime.run_pbx(lambda: "sent"), 2.0)
        finally:
            proxy.proxy.delay = 0.0  # the PBX answers again: every warm-up ends
            proxy.drop()
            done = ("opened", "failed")
            await until(
                lambda: sum(preopen.pool.counts[k] for k in done) == burst,
                within=30,
                what="every warm-up to end",
            )
            warming = [t for t in asyncio.all_tasks() if t.get_name() == "pbx-preopen"]
            await asyncio.gather(*warming)  # their threads have handed back their results
            receiving.cancel()

    assert asyncio.run(scenario()) == "sent"


def test_a_decision_that_waited_on_a_handshake_still_ends_by_its_call_deadline(
    pbx_tls: SimulatorThread, proxy: DelayProxyThread
) -> None:
    client = client_with_token()
    sent = pbx_tls.inject()
    proxy.proxy.delay = 30.0  # the handshake hangs, and so would a fresh connection's
    handshakes = proxy.connections
    warming = threading.Thread(
        target=preopen.warm_up, args=(sent["channel_id"], time.time() + 8), daemon=True
    )
    warming.start()
    wait_for(lambda: proxy.connections == handshakes + 1, what="the handshake to start")

    deadline = time.time() + 2.0
    answer = answers.ask(sent["channel_id"], Decision.ACCEPT, deadline, client)
    ended = time.time()
    proxy.proxy.delay = 0.0
    proxy.drop()
    warming.join(10)

    assert answer.status == CallStatus.FAILED
    # Its wait for the handshake counted against the call's time: no fresh connection given the
    # whole time again (which would end about 2 s past the deadline).
    assert ended < deadline + 1.0, ended - deadline


def test_an_unforeseen_error_at_warm_up_leaves_no_entry_for_a_decision_to_wait_on(
    pbx_tls: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unforeseen(key: preopen.Key, timeout: float) -> Any:
        raise ValueError("not an OSError")

    monkeypatch.setattr(preopen, "_connect", unforeseen)
    with pytest.raises(ValueError, match="not an OSError"):  # propagated: its task logs it
        preopen.warm_up("PJSIP/odd", time.time() + 8)
    assert len(preopen.pool) == 0
    key = preopen.key_for(preopen.settings.PBX_BASE_URL, preopen.settings.PBX_VERIFY_TLS)
    assert preopen.pool.take(key, "PJSIP/odd", 5.0) is None
