"""Metrics are per process: in the scale-out setup the listener (`pbx_listen --metrics-port`)
counts the calls it stores, the web process counts the decisions it sends, and Prometheus adds
them up. Both report the link the listener shares."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from screening.devtools.procs import start_manage
from tests.metrics.scrape import TOKEN, Samples, scrape
from tests.support.calls import arrived
from tests.support.cluster import require_scaleout, start_cluster
from tests.support.live import free_port, make_user, session_for, wait_for

pytestmark = [pytest.mark.live, pytest.mark.scaleout]

TRUNK = "peer-to-41"
RECEIVED = "pbxscreen_calls_received_total"
ENDED = "pbxscreen_calls_ended_total"


def reachable(url: str) -> Samples | None:
    try:
        return scrape(url)
    except (requests.RequestException, AssertionError):
        return None


def test_the_listener_and_the_web_process_each_count_their_part(
    transactional_db: None, tmp_path: Path
) -> None:
    require_scaleout()
    cluster = start_cluster(tmp_path, web=1, METRICS_TOKEN=TOKEN)
    try:
        # The same listener, with its metrics served (deploy/pbxscreen-listener.service's line).
        assert cluster.listener is not None
        cluster.listener.stop()
        port = free_port()
        cluster.listener = start_manage(
            f"pbx_listen-metrics-{time.monotonic_ns()}",
            ["pbx_listen", "--metrics-port", str(port)],
            env=cluster.env,
            log_dir=tmp_path,
        )
        listener = f"http://127.0.0.1:{port}"
        web = cluster.urls[0]
        wait_for(
            lambda: (
                (s := reachable(listener)) is not None
                and s.get("pbxscreen_pbx_tokens_issued_total") + s.get("pbxscreen_pbx_link_up") > 0
                and cluster.link_state() == "up"
            ),
            timeout=20,
            interval=0.1,
            what="the new listener to serve its metrics with the link up",
        )

        # Stored by the listener: counted there, not by the web process.
        sent = cluster.sim.inject("07700900111", "02079460000", TRUNK)
        call = arrived(sent)
        wait_for(lambda: scrape(listener).get(RECEIVED, trunk=TRUNK) == 1, what="received")
        assert scrape(web).get(RECEIVED) == 0

        # Decided through the web process: the outcome, its timing and the PBX request there.
        http = session_for(cluster.web[0], make_user("alice"))
        assert http.post(f"{web}/calls/{call.pk}/accept", timeout=10).status_code == 200
        wait_for(
            lambda: scrape(web).get(ENDED, outcome="accepted", decided_by="operator") == 1,
            what="the accepted call counted by the web process",
        )
        at_web = scrape(web)
        assert at_web.get("pbxscreen_decision_seconds_count") == 1
        assert at_web.get("pbxscreen_pbx_request_seconds_count", endpoint="call/accept_inbound")
        assert scrape(listener).get(ENDED) == 0

        # Nobody decides: expired by the listener's timer (or a sweeper): once, in one process.
        sent = cluster.sim.inject("07700900222", "02079460000", TRUNK)
        arrived(sent)
        wait_for(
            lambda: (
                scrape(listener).get(ENDED, outcome="expired")
                + scrape(web).get(ENDED, outcome="expired")
                == 1
            ),
            timeout=15,
            interval=0.1,
            what="the expiry counted",
        )
        for url in (listener, web):
            assert scrape(url).get("pbxscreen_pbx_link_up") == 1
    finally:
        cluster.stop()
