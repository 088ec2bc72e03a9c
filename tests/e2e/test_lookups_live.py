"""External caller lookups over real sockets: the PBX simulator, a real `serve` process, an
operator's dashboard socket, and a real local HTTP server as the lookup endpoint.

The rule under test: the card reaches the operator at once with what the database knew, whatever
the lookup server does; a name found within the budget follows as an update of the same card; a
name after the budget, a hang, a 500 or garbage change nothing on the card, and /healthz says so.
The bounds here are generous correctness bounds, not performance figures (those are in
`manage.py bench --suite --parts lookups`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from screening.devtools.lookup_server import HANG, Answer, LookupServer
from screening.models import AuditEvent, Call
from tests.conftest import TEST_WINDOW, Live, LiveFactory
from tests.support.cluster import require_scaleout, start_cluster
from tests.support.live import make_user, session_for, wait_for
from tests.support.sockets import OperatorSocket

pytestmark = pytest.mark.live

BUDGET_MS = 500
FIRST_PUSH_BOUND = 2.0  # seconds from the simulator's send to the operator's socket
TOKEN = "lookup-health-token"
TRUNK, CALLED = "peer-to-41", "02079460000"


@pytest.fixture
def lookup_server() -> Iterator[LookupServer]:
    with LookupServer() as server:
        yield server


@pytest.fixture
def live(live_factory: LiveFactory, lookup_server: LookupServer) -> Live:
    return live_factory(
        CALLER_LOOKUP_URL=lookup_server.template,
        CALLER_LOOKUP_BUDGET_MS=str(BUDGET_MS),
        HEALTHZ_TOKEN=TOKEN,
    )


def cards(socket: OperatorSocket, call_id: str) -> list[dict[str, Any]]:
    """Every version of the call's card this socket was pushed, in order (snapshots left out)."""
    return [
        m["call"]
        for m in list(socket.messages)
        if m.get("type") == "call" and m["call"].get("call_id") == call_id
    ]


def ring(live: Live, socket: OperatorSocket, caller: str) -> tuple[str, dict[str, Any]]:
    """Offer a call; return its id and the first card the operator got, within the bound."""
    call_id = live.sim.inject(caller, CALLED, TRUNK)["call_id"]
    first = wait_for(
        lambda: cards(socket, call_id),
        timeout=FIRST_PUSH_BOUND,
        what=f"the first push of {caller}'s card",
    )[0]
    assert first["status"] == "pending"
    return call_id, first


def health(url: str) -> dict[str, Any]:
    answer = requests.get(f"{url}/healthz", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    return answer.json()


def test_a_name_found_within_the_budget_updates_the_pushed_card_and_is_cached(
    live: Live, lookup_server: LookupServer
) -> None:
    lookup_server.answers["447700900301"] = Answer.name("Ann\x1b[31m Caller", delay=0.1)
    with OperatorSocket(live, make_user("op1")) as socket:
        call_id, first = ring(live, socket, "07700900301")
        assert first["caller_name"] == ""  # out before the lookup answered
        named = wait_for(
            lambda: [c for c in cards(socket, call_id) if c["caller_name"]],
            timeout=FIRST_PUSH_BOUND,
            what="the card's update with the looked-up name",
        )[0]
        assert named["caller_name"] == "Ann [31m Caller"  # the escape character is gone
        assert named["context"]["lookup"]["name"] == "Ann [31m Caller"
        assert named["context"]["lookup"]["source"] == "http"
        assert named["status"] == "pending"
        call = Call.objects.get(pbx_call_id=call_id)
        assert call.caller_name == "Ann [31m Caller"
        audit = AuditEvent.objects.get(call=call, kind="caller_name")
        assert audit.detail["source"] == "http"

        # The next call from the number: the first push already carries the name, no new lookup.
        _, first_again = ring(live, socket, "07700900301")
        assert first_again["caller_name"] == "Ann [31m Caller"
        assert first_again["context"]["lookup"]["name"] == "Ann [31m Caller"
        time.sleep(0.3)
        assert lookup_server.hits_for("447700900301") == 1
    assert health(live.url)["lookups"] == "ok"


def test_a_name_after_the_budget_never_reaches_the_card(
    live: Live, lookup_server: LookupServer
) -> None:
    lookup_server.answers["447700900302"] = Answer.name("Too Late", delay=BUDGET_MS / 1000 + 0.7)
    with OperatorSocket(live, make_user("op2")) as socket:
        call_id, first = ring(live, socket, "07700900302")
        assert first["caller_name"] == ""
        wait_for(lambda: lookup_server.hits_for("447700900302"), what="the lookup request")
        time.sleep(BUDGET_MS / 1000 + 1.0)  # past the budget and past the server's answer
        assert [c["caller_name"] for c in cards(socket, call_id)] == [""]
    call = Call.objects.get(pbx_call_id=call_id)
    assert call.caller_name == ""
    assert "lookup" not in call.context
    assert not AuditEvent.objects.filter(call=call, kind="caller_name").exists()
    body = health(live.url)
    assert body["lookup_counts"]["recent"]["late"] == 1
    assert "no answer within 500 ms" in live.server.log()


def test_a_hanging_lookup_server_holds_up_neither_pushes_nor_decisions(
    live: Live, lookup_server: LookupServer
) -> None:
    lookup_server.default = HANG
    operator = make_user("op3", first_name="Hana")
    http = session_for(live.server, operator)
    with OperatorSocket(live, operator) as socket:
        rung = [ring(live, socket, f"0770090031{i}") for i in range(4)]
        assert all(first["caller_name"] == "" for _, first in rung)
        # Decide the first two while their lookups still hang.
        for call_id, first in rung[:2]:
            answer = http.post(f"{live.url}/calls/{first['id']}/accept", timeout=5)
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "accepted"
            assert live.sim.call(call_id)["outcome"] == "accepted"
        body = wait_for(
            lambda: (b := health(live.url))["lookup_counts"]["recent"]["late"] == len(rung) and b,
            timeout=BUDGET_MS / 1000 + 3,
            what="/healthz to count every lookup late",
        )
        assert body["lookups"] == "failing"
        assert body["status"] == "degraded"  # lookups are not needed to screen: never "failing"
        assert body["database"] == body["channel_layer"] == "ok"
        assert "4 of the last 4 lookups" in body["details"]["lookups"]
        # The word is public; the counts are not.
        public = requests.get(f"{live.url}/healthz", timeout=5).json()
        assert public["lookups"] == "failing"
        assert "lookup_counts" not in public
        assert all(c["caller_name"] == "" for cid, _ in rung for c in cards(socket, cid))


def test_errors_and_garbage_change_nothing_but_a_log_line_and_a_count(
    live: Live, lookup_server: LookupServer
) -> None:
    bad = {
        "447700900321": Answer(status=500, body=b'{"name": "Internal"}'),
        "447700900322": Answer(body=b"<html>We'll be right back</html>"),
        "447700900323": Answer.json({"name": ["Not", "a", "string"]}),
        "447700900324": Answer(body=b'{"name": "' + b"B" * 300_000 + b'"}', declare_length=False),
    }
    lookup_server.answers.update(bad)
    lookup_server.answers["447700900325"] = Answer.name("Good Name")
    with OperatorSocket(live, make_user("op4")) as socket:
        rung = [ring(live, socket, "0" + number[2:]) for number in bad]
        good, _ = ring(live, socket, "07700900325")
        wait_for(
            lambda: any(c["caller_name"] == "Good Name" for c in cards(socket, good)),
            timeout=FIRST_PUSH_BOUND,
            what="the good lookup's name",
        )
        wait_for(
            lambda: health(live.url)["lookup_counts"]["recent"]["failed"] == len(bad),
            timeout=BUDGET_MS / 1000 + 2,
            what="every failure counted",
        )
        for call_id, _ in rung:
            assert [c["caller_name"] for c in cards(socket, call_id)] == [""]
    log = live.server.log()
    for reason in ("HTTP 500", "not JSON", "not a string", "more than 65536 bytes"):
        assert reason in log, reason
    body = health(live.url)
    assert body["lookup_counts"]["recent"]["found"] == 1
    assert body["lookups"] == "failing"  # 4 of the last 5
    assert body["status"] == "degraded"


@pytest.mark.scaleout
def test_on_the_scale_out_setup_the_listener_looks_up_and_every_web_process_reports_it(
    transactional_db: None, tmp_path: Path, lookup_server: LookupServer
) -> None:
    """Two web processes (listener off) + pbx_listen on PostgreSQL + Redis: the listener runs
    the lookups, the name reaches an operator on a web process, the cache it fills serves the
    next call, and both web processes' /healthz report the listener's failures."""
    require_scaleout()
    cluster = start_cluster(
        tmp_path,
        CALLER_LOOKUP_URL=lookup_server.template,
        CALLER_LOOKUP_BUDGET_MS=str(BUDGET_MS),
        HEALTHZ_TOKEN=TOKEN,
    )
    try:
        lookup_server.answers["447700900341"] = Answer.name("Shared Sam")
        web = Live(cluster.sim, cluster.web[1], TEST_WINDOW)
        with OperatorSocket(web, make_user("op5")) as socket:
            call_id, first = ring(web, socket, "07700900341")
            assert first["caller_name"] == ""
            wait_for(
                lambda: any(c["caller_name"] == "Shared Sam" for c in cards(socket, call_id)),
                timeout=FIRST_PUSH_BOUND,
                what="the looked-up name on a web process's socket",
            )
            _, again = ring(web, socket, "07700900341")
            assert again["caller_name"] == "Shared Sam"  # from the shared cache, first push
            assert lookup_server.hits_for("447700900341") == 1
            lookup_server.default = HANG
            for i in range(3):
                ring(web, socket, f"0770090035{i}")

        def failing_everywhere() -> bool:
            return all(health(url)["lookups"] == "failing" for url in cluster.urls)

        wait_for(failing_everywhere, timeout=BUDGET_MS / 1000 + 5, what="every /healthz failing")
        body = health(cluster.urls[0])
        assert body["status"] == "degraded"
        assert body["lookup_counts"]["recent_from"] == "the process doing lookups"
        assert body["lookup_counts"]["recent"]["late"] == 3
    finally:
        cluster.stop()
