"""Calls the PBX offered while the event link was down: reading its call records, recording the
missed calls as unscreened once and only once, and surviving a PBX that fails meanwhile.

The PBX is the simulator over real sockets: calls offered while nobody is subscribed are routed by
it after its window and listed by its ``cdr/search``, as a real PBX does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone

from screening.calls import outcomes, reconcile
from screening.models import (
    AuditEvent,
    AuditKind,
    Call,
    CallStatus,
    LinkOutage,
    PbxOutcome,
    StatsHour,
    Trunk,
)
from screening.pbx.client import PbxClient
from screening.pbx.events import parse_event
from screening.reports import rollup, stats
from screening.simulator import SimulatorThread
from tests.support.live import wait_for

pytestmark = pytest.mark.django_db


# --- reading the PBX's call records -------------------------------------------------------------


def test_every_plausible_field_naming_reads_as_the_same_record(settings: Any) -> None:
    settings.TIME_ZONE = "Europe/London"  # the PBX's local time is read in the product's zone
    as_30012 = {
        "call_id": "1714000000.17",
        "time_start": "2024-07-01 09:30:00",
        "call_from": "07700900123",
        "call_to": "02079460000",
        "call_duration": 42,
        "talk_duration": 30,
        "src_trunk_name": "peer-to-41",
        "status": "ANSWERED",
        "type": "Inbound",
    }
    as_cdr_list = {
        "call_id": "1714000000.17",
        "time": "2024-07-01 09:30:00",
        "call_from": 7700900123,  # a number for a number is accepted
        "call_to": "02079460000",
        "duration": "42",
        "talk_duration": 30,
        "src_trunk": "peer-to-41",
        "disposition": "answered",
        "call_type": "inbound",
    }
    short_names = {
        "uid": "1714000000.17",
        "time": 1719822600,  # Unix seconds: 09:30 in London (BST) is 08:30 UTC
        "src": "07700900123",
        "dst": "02079460000",
        "duration": 42,
        "src_trunk": " peer-to-41 ",
        "disposition": " Answered ",
        "call_type": " INBOUND",
    }
    read = [reconcile.parse_record(item) for item in (as_30012, as_cdr_list, short_names)]
    assert all(r is not None for r in read)
    for record in read:
        assert record.call_id == "1714000000.17"
        assert record.started == datetime(2024, 7, 1, 8, 30, tzinfo=UTC)
        assert record.trunk_name == "peer-to-41"
        assert record.status == "ANSWERED"
        assert record.inbound
        assert record.duration == 42
        assert reconcile.outcome_for(record) == PbxOutcome.ANSWERED
    assert read[1].caller == "7700900123"


@pytest.mark.parametrize(
    ("status", "talk", "outcome"),
    [
        ("ANSWERED", 12, PbxOutcome.ANSWERED),
        ("ANSWERD", 12, PbxOutcome.ANSWERED),  # the doc table's own spelling
        ("VOICEMAIL", 0, PbxOutcome.ANSWERED),
        ("no answer", 0, PbxOutcome.NO_ANSWER),
        ("BUSY", 0, PbxOutcome.NO_ANSWER),
        ("FAILED", 0, ""),  # unknown to us: kept as the PBX's word only
    ],
)
def test_the_pbx_status_becomes_the_outcome_where_it_says_one(
    status: str, talk: int, outcome: str
) -> None:
    record = reconcile.parse_record({"call_id": "1.1", "status": status, "talk_duration": talk})
    assert record is not None
    assert reconcile.outcome_for(record) == outcome


def test_records_that_name_no_call_or_are_not_inbound_are_left_out() -> None:
    assert reconcile.parse_record({"call_id": " ", "status": "ANSWERED"}) is None
    assert reconcile.parse_record(["not", "an", "object"]) is None
    outbound = reconcile.parse_record({"call_id": "1.2", "type": "Outbound"})
    internal = reconcile.parse_record({"call_id": "1.3", "call_type": "internal"})
    unstated = reconcile.parse_record({"call_id": "1.4", "src_trunk": "peer-to-41"})
    assert outbound is not None
    assert not outbound.inbound
    assert internal is not None
    assert not internal.inbound
    assert unstated is not None
    assert unstated.inbound
    odd_time = reconcile.parse_record({"call_id": "1.5", "time": "yesterday-ish"})
    assert odd_time is not None
    assert odd_time.started is None


# --- reconciling a window against the simulator -------------------------------------------------


@pytest.fixture
def quick_pbx(settings: Any) -> Iterator[SimulatorThread]:
    """A simulator whose calls are over within about a second: a short window, short rings."""
    with SimulatorThread(
        call_rate=0.0, window_seconds=0.3, ring_seconds=(0.05, 0.1), talk_seconds=(0.1, 0.2)
    ) as sim:
        settings.PBX_BASE_URL = sim.base_url
        settings.PBX_CLIENT_ID = sim.client_id
        settings.PBX_CLIENT_SECRET = sim.client_secret
        yield sim


@pytest.fixture
def trunks() -> dict[str, Trunk]:
    return {
        "screened": Trunk.objects.create(name="peer-to-41"),
        "open": Trunk.objects.create(name="register-bt", screening_enabled=False),
    }


def offer_unheard(sim: SimulatorThread, count: int, trunk: str = "peer-to-41") -> list[str]:
    """Offer calls with nobody subscribed and wait until the PBX has routed and ended them."""
    ids = [sim.inject(f"0770090{i:04d}", "02079460000", trunk)["call_id"] for i in range(count)]
    wait_for(lambda: all(sim.call(i)["state"] == "ended" for i in ids), timeout=10)
    return ids


def window(minutes: int = 5) -> LinkOutage:
    now = timezone.now()
    return LinkOutage.objects.create(
        started_at=now - timedelta(minutes=minutes), ended_at=now + timedelta(seconds=1)
    )


def client_for(sim: SimulatorThread) -> PbxClient:
    return PbxClient(sim.base_url, sim.client_id, sim.client_secret, cache=cache)


def test_calls_nobody_saw_become_unscreened_with_what_the_pbx_did(
    quick_pbx: SimulatorThread, trunks: dict[str, Trunk]
) -> None:
    missed = offer_unheard(quick_pbx, 4)
    seen = offer_unheard(quick_pbx, 1)[0]
    Call.objects.create(  # the one call the product did see
        pbx_call_id=seen,
        channel_id=quick_pbx.call(seen)["channel_id"],
        trunk=trunks["screened"],
        received_at=timezone.now(),
        deadline=timezone.now(),
        status=CallStatus.EXPIRED,
    )
    offer_unheard(quick_pbx, 2, trunk="register-bt")  # screening off there: not ours

    outage = reconcile.reconcile(window(), client_for(quick_pbx))

    assert outage.reconciled_at is not None
    assert outage.error == ""
    assert (outage.offered, outage.unscreened) == (5, 4)
    assert Call.objects.filter(pbx_call_id=seen).count() == 1
    assert Call.objects.filter(trunk=trunks["open"]).count() == 0
    for call_id in missed:
        sim_call = quick_pbx.call(call_id)
        call = Call.objects.get(pbx_call_id=call_id)
        assert call.status == CallStatus.UNSCREENED
        assert call.caller == sim_call["from"]
        assert call.called == sim_call["to"]  # the number dialled, not the extension that rang
        assert call.caller_token.startswith("anon-")
        assert call.caller_key == "44" + sim_call["from"][1:]
        assert abs(call.received_at.timestamp() - sim_call["offered_at"]) < 1.0
        answered = sim_call["answered_at"] is not None
        assert call.pbx_outcome == (PbxOutcome.ANSWERED if answered else PbxOutcome.NO_ANSWER)
        rows = AuditEvent.objects.filter(call=call)
        assert [r.kind for r in rows] == [AuditKind.UNSCREENED]
        assert rows[0].detail["pbx_status"] == ("ANSWERED" if answered else "NO ANSWER")
    # Each page is asked for with an explicit size (the PBX's default is 10,000 records), in
    # Unix seconds, and every page is read.
    searches = quick_pbx.log("cdr/search")
    assert searches
    assert all(e["query"]["page_size"].isdigit() for e in searches)
    assert all(e["query"]["start_time"].isdigit() for e in searches)
    paged = client_for(quick_pbx).cdr_search(0, 2**31, page_size=2)
    assert len(paged) == 7
    assert len(quick_pbx.log("cdr/search")) == len(searches) + 4  # 2+2+2+1


def test_reconciling_twice_records_nothing_twice(
    quick_pbx: SimulatorThread, trunks: dict[str, Trunk]
) -> None:
    missed = offer_unheard(quick_pbx, 3)
    outage = window()
    reconcile.reconcile(outage, client_for(quick_pbx))
    again = reconcile.reconcile(outage.pk, client_for(quick_pbx))
    overlapping = reconcile.reconcile(window(minutes=10), client_for(quick_pbx))
    assert (again.offered, again.unscreened) == (3, 3)
    assert (overlapping.offered, overlapping.unscreened) == (3, 3)
    for call_id in missed:
        assert Call.objects.filter(pbx_call_id=call_id).count() == 1
        assert (
            AuditEvent.objects.filter(call__pbx_call_id=call_id, kind=AuditKind.UNSCREENED).count()
            == 1
        )


@pytest.mark.django_db(transaction=True)
def test_two_processes_reconciling_at_once_record_each_call_once(
    quick_pbx: SimulatorThread, trunks: dict[str, Trunk]
) -> None:
    missed = offer_unheard(quick_pbx, 5)
    records = [
        r
        for r in map(reconcile.parse_record, client_for(quick_pbx).cdr_search(0, 2**31))
        if r is not None
    ]
    start = threading.Barrier(4)
    made: list[Any] = []

    def run() -> None:
        from django.db import connection

        try:
            start.wait()
            for record in records:
                made.append(
                    reconcile.record_unscreened(
                        record, trunks["screened"], fallback_time=timezone.now(), outage=None
                    )
                )
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for m in made if m is not None) == len(missed)
    for call_id in missed:
        assert Call.objects.filter(pbx_call_id=call_id).count() == 1
        assert AuditEvent.objects.filter(call__pbx_call_id=call_id).count() == 1


def test_a_pbx_failing_during_reconciliation_keeps_the_window_for_a_retry(
    quick_pbx: SimulatorThread, trunks: dict[str, Trunk]
) -> None:
    missed = offer_unheard(quick_pbx, 2)
    outage = window()
    quick_pbx.set_faults(fail_cdr_search=True)
    failed = reconcile.reconcile(outage, client_for(quick_pbx))
    assert failed.reconciled_at is None
    assert "-2" in failed.error
    assert LinkOutage.objects.get(pk=outage.pk).error == failed.error
    assert not Call.objects.filter(status=CallStatus.UNSCREENED).exists()

    quick_pbx.set_faults(fail_cdr_search=False)
    assert reconcile.retry() == 1  # the sweeper's turn
    outage.refresh_from_db()
    assert outage.reconciled_at is not None
    assert outage.error == ""
    assert set(
        Call.objects.filter(status=CallStatus.UNSCREENED).values_list("pbx_call_id", flat=True)
    ) == set(missed)


def test_an_unreachable_pbx_is_an_error_on_the_window_not_a_crash(
    trunks: dict[str, Trunk], settings: Any
) -> None:
    with SimulatorThread(call_rate=0.0) as sim:
        client = client_for(sim)
    outage = reconcile.reconcile(window(), client)  # the simulator is gone
    assert outage.reconciled_at is None
    assert outage.error.startswith("cdr/search failed")


# --- the 30012 of a call still going on when its window was reconciled ---------------------------


def cdr_event(call_id: str, started: datetime, status: str = "ANSWERED", **extra: Any) -> Any:
    msg = {
        "call_id": call_id,
        "time_start": timezone.localtime(started).strftime("%Y-%m-%d %H:%M:%S"),
        "call_from": "07700900555",
        "call_to": "02079460000",
        "call_duration": 90,
        "talk_duration": 80 if status == "ANSWERED" else 0,
        "src_trunk_name": "peer-to-41",
        "dst_trunk_name": " ",
        "status": status,
        "type": "Inbound",
        **extra,
    }
    import json

    return parse_event({"type": 30012, "sn": "3631A2124XXX", "msg": json.dumps(msg)})


def test_a_late_record_of_a_call_offered_in_a_window_is_recorded_unscreened(
    trunks: dict[str, Trunk],
) -> None:
    outage = window()
    LinkOutage.objects.filter(pk=outage.pk).update(reconciled_at=timezone.now(), offered=2)
    started = timezone.now() - timedelta(minutes=2)
    outcomes.record_cdr(cdr_event("1700000000.1", started))
    outcomes.record_cdr(cdr_event("1700000000.1", started))  # delivered twice
    call = Call.objects.get(pbx_call_id="1700000000.1")
    assert call.status == CallStatus.UNSCREENED
    assert call.pbx_outcome == PbxOutcome.ANSWERED
    outage.refresh_from_db()
    assert (outage.offered, outage.unscreened) == (3, 1)
    # Outside every window, or on a trunk not screened: no call of ours.
    outcomes.record_cdr(cdr_event("1700000000.2", timezone.now() - timedelta(hours=2)))
    outcomes.record_cdr(cdr_event("1700000000.3", started, src_trunk_name="register-bt"))
    assert not Call.objects.filter(pbx_call_id__in=["1700000000.2", "1700000000.3"]).exists()


def test_a_later_report_on_an_unscreened_call_is_only_recorded(trunks: dict[str, Trunk]) -> None:
    window()
    started = timezone.now() - timedelta(minutes=1)
    outcomes.record_cdr(cdr_event("1700000001.1", started, status="NO ANSWER"))
    call = Call.objects.get(pbx_call_id="1700000001.1")
    version = call.version
    outcomes.record_cdr(cdr_event("1700000001.1", started, status="ANSWERED"))
    call.refresh_from_db()
    assert call.status == CallStatus.UNSCREENED
    assert call.pbx_outcome == PbxOutcome.NO_ANSWER
    assert call.version == version
    assert not call.outcome_mismatch
    kinds = list(AuditEvent.objects.filter(call=call).values_list("kind", flat=True))
    assert kinds == [AuditKind.UNSCREENED, AuditKind.PBX_CDR]


# --- windows: opened, closed, and where a listener start begins one ------------------------------


def test_a_listener_start_reconciles_from_when_the_pbx_was_last_heard(
    trunks: dict[str, Trunk], settings: Any
) -> None:
    now = timezone.now()
    assert reconcile.last_heard(now) == now  # nothing known: nothing to reconcile
    Call.objects.create(
        pbx_call_id="1.9",
        channel_id="c",
        trunk=trunks["screened"],
        received_at=now - timedelta(hours=3),
        deadline=now,
    )
    assert reconcile.last_heard(now) == now - timedelta(hours=3)
    closed = LinkOutage.objects.create(
        started_at=now - timedelta(hours=2), ended_at=now - timedelta(hours=1)
    )
    assert reconcile.last_heard(now) == closed.ended_at
    settings.OUTAGE_LOOKBACK_HOURS = 0.5  # capped: never further back than the look-back
    assert reconcile.last_heard(now) == now - timedelta(minutes=30)

    started = reconcile.listener_started(now)
    assert started.started_at == now - timedelta(minutes=30)
    assert started.ended_at is None
    assert reconcile.link_lost(now).pk == started.pk  # one open window at a time
    assert reconcile.listener_started(now).pk == started.pk  # a crash keeps the window's start
    assert reconcile.link_back(now + timedelta(seconds=5)) == [started.pk]
    started.refresh_from_db()
    assert started.ended_at == now + timedelta(seconds=5)
    assert reconcile.link_back(now) == []


# --- statistics ----------------------------------------------------------------------------------


def test_stats_count_unscreened_calls_apart_and_the_roll_up_is_unchanged(
    quick_pbx: SimulatorThread, trunks: dict[str, Trunk], supervisor: Any
) -> None:
    seen_at = timezone.now() - timedelta(hours=3)
    Call.objects.create(
        pbx_call_id="2.1",
        channel_id="c",
        trunk=trunks["screened"],
        received_at=seen_at,
        deadline=seen_at,
        status=CallStatus.EXPIRED,
    )
    rollup.rollup(since=seen_at - timedelta(hours=1))
    rolled = list(StatsHour.objects.order_by("hour").values_list("hour", "complete", "calls"))
    # A window over hours already rolled up.
    missed = offer_unheard(quick_pbx, 2)
    outage = reconcile.reconcile(window(minutes=240), client_for(quick_pbx))
    assert outage.unscreened == 2
    assert list(StatsHour.objects.order_by("hour").values_list("hour", "complete", "calls")) == (
        rolled
    )
    today = timezone.localdate()
    result = stats.compute(stats.Period(today - timedelta(days=1), today, "day"))
    assert result.total.offered == 1  # offered to screening: the unscreened are apart
    assert result.unscreened == 2
    per_day = {b.key: b.unscreened for b in result.buckets}
    for call_id in missed:
        day = timezone.localdate(Call.objects.get(pbx_call_id=call_id).received_at)
        assert per_day[day] >= 1
    assert sum(per_day.values()) == 2
    assert [o.pk for o in result.outages] == [outage.pk]

    page = supervisor.get("/stats/").content.decode()
    assert "Link outages" in page
    assert "unscreened" in page
    audit = supervisor.get("/audit/", {"outcome": "unscreened"}).content.decode()
    export = b"".join(
        supervisor.get("/audit/export.csv", {"outcome": "unscreened"}).streaming_content
    ).decode()
    assert export.count(",unscreened,") == 2
    for call_id in missed:
        call = Call.objects.get(pbx_call_id=call_id)
        assert call.caller in audit
        assert call.caller in export
        detail = supervisor.get(f"/audit/{call.pk}/").content.decode()
        assert "Offered while the event link was down" in detail
        assert "the PBX offered this call" in detail


# --- the listener tells when the link goes down and comes back -----------------------------------


def test_the_listener_reports_its_start_each_loss_and_each_return(pbx_sim: SimulatorThread) -> None:
    import asyncio

    from screening.pbx import link
    from tests.pbx.test_listener import run_with_listener
    from tests.support.live import until

    told: list[str] = []

    async def on_link(state: str, at: datetime) -> None:
        told.append(state)

    async def scenario(listener: Any, events: list[Any]) -> None:
        await until(lambda: told == [link.CONNECTING, link.UP])
        await asyncio.to_thread(pbx_sim.drop_sockets)
        await until(lambda: told == [link.CONNECTING, link.UP, link.DOWN, link.UP])

    run_with_listener(pbx_sim, scenario, heartbeat=5.0, on_link=on_link)
    assert told[-1] == link.DOWN  # stopping lets go of the link too: the next start covers it


def test_the_simulator_lists_call_records_by_start_in_pages(quick_pbx: SimulatorThread) -> None:
    import requests

    ids = offer_unheard(quick_pbx, 3)
    client = client_for(quick_pbx)
    records = client.cdr_search(0, 2**31, page_size=2)
    assert [r["call_id"] for r in records] == ids
    assert {"time", "disposition", "call_type", "src_trunk", "call_from", "uid"} <= set(records[0])
    first = quick_pbx.call(ids[0])["offered_at"]
    assert client.cdr_search(first + 3600, first + 7200) == []
    token = client.access_token()
    url = f"{quick_pbx.base_url}/openapi/v1.0/cdr/search"
    headers = {"User-Agent": "test"}
    missing = requests.get(url, params={"access_token": token}, headers=headers, timeout=5)
    assert missing.json()["errcode"] == 40002
    too_big = requests.get(
        url,
        params={"access_token": token, "start_time": 0, "end_time": 1, "page_size": 10_001},
        headers=headers,
        timeout=5,
    )
    assert too_big.json()["errcode"] == 40002
