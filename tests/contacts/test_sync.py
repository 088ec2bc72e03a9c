"""`manage.py sync_contacts` and the sweeper's scheduled sync, against the simulated PBX over
real sockets."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from pytest_django.fixtures import Settings as SettingsWrapper

from screening.contacts import sync
from screening.models import Contact, ContactNumber, ContactSource
from screening.simulator import SimulatorThread
from tests.conftest import LiveFactory
from tests.support.cluster import require_scaleout, start_cluster

pytestmark = pytest.mark.django_db


def run_sync() -> str:
    out = io.StringIO()
    call_command("sync_contacts", stdout=out)
    return out.getvalue()


def pbx_rows() -> dict[str, tuple[str, str, list[tuple[str, str]]]]:
    return {
        c.external_id: (c.name, c.organisation, [(n.normalised, n.label) for n in c.numbers.all()])
        for c in Contact.objects.filter(source=ContactSource.PBX).prefetch_related("numbers")
    }


def snapshot() -> list[tuple]:
    rows = Contact.objects.order_by("pk").values_list("pk", "name", "source", "updated_at")
    numbers = ContactNumber.objects.order_by("pk").values_list("pk", "contact_id", "normalised")
    return [*rows, *numbers]


def test_sync_adds_changes_and_removes_only_pbx_contacts(pbx: SimulatorThread) -> None:
    manual = Contact.objects.create(name="Front desk", organisation="Us")
    manual.numbers.create(number="+44 20 7946 0999")
    imported = Contact.objects.create(name="Ann Lee", source="import", external_id="1")
    looked_up = Contact.objects.create(name="CRM name", source="lookup", external_id="2")
    generated = pbx.contacts()
    assert len(generated) == 24

    out = run_sync()
    rows = pbx_rows()
    assert "24 PBX contacts read: 24 added, 0 updated, 0 unchanged, 0 removed" in out
    assert set(rows) == {str(c["id"]) for c in generated}
    first = generated[0]
    assert rows[str(first["id"])][0] == first["contact_name"]
    # Every PBX list request carried an explicit page_size (the PBX's default is 10,000).
    lists = pbx.log("company_contact/list")
    assert lists
    assert all(entry["query"].get("page_size") for entry in lists)

    added = pbx.add_contact(
        contact_name="Grace Reid",
        company="Mersey Plumbing",
        mobile="+44 7700 900777",
        business2="0161 496 0777",
        home="anonymous",  # not a number: left out
    )
    pbx.change_contact(first["id"], contact_name="Renamed Person", company="New Co")
    removed = generated[1]
    pbx.remove_contact(removed["id"])
    out = run_sync()
    assert "1 added, 1 updated, 22 unchanged, 1 removed" in out
    rows = pbx_rows()
    assert rows[str(added["id"])] == (
        "Grace Reid",
        "Mersey Plumbing",
        [("441614960777", "business2"), ("447700900777", "mobile")],
    )
    assert rows[str(first["id"])][:2] == ("Renamed Person", "New Co")
    assert str(removed["id"]) not in rows

    # The other sources' rows were never touched.
    for contact in (manual, imported, looked_up):
        fresh = Contact.objects.get(pk=contact.pk)
        assert (fresh.name, fresh.updated_at) == (contact.name, contact.updated_at)
    assert list(manual.numbers.values_list("normalised", flat=True)) == ["442079460999"]

    before = snapshot()
    assert "0 added, 0 updated, 24 unchanged, 0 removed" in run_sync()
    assert snapshot() == before


def test_sync_follows_pages(pbx: SimulatorThread, monkeypatch: pytest.MonkeyPatch) -> None:
    from screening.pbx import client

    monkeypatch.setattr(client, "CONTACT_PAGE_SIZE", 5)
    run_sync()
    assert len(pbx_rows()) == 24
    pages = [(e["query"]["page"], e["query"]["page_size"]) for e in pbx.log("company_contact/list")]
    assert pages == [("1", "5"), ("2", "5"), ("3", "5"), ("4", "5"), ("5", "5")]


@pytest.mark.parametrize(
    "fault",
    [{"http_500_rate": 1.0}, {"non_json_rate": 1.0}, "dead"],
    ids=["http-500", "not-json", "dead-pbx"],
)
def test_a_pbx_failure_leaves_the_table_unchanged(pbx: SimulatorThread, fault: object) -> None:
    run_sync()
    pbx.remove_contact(pbx.contacts()[0]["id"])
    before = snapshot()
    if fault == "dead":
        pbx.stop()
    else:
        pbx.set_faults(**fault)
    with pytest.raises(CommandError, match="Contacts unchanged, the PBX failed"):
        run_sync()
    assert snapshot() == before


def test_garbage_items_are_tolerated() -> None:
    from screening.contacts.sync import apply_pbx_contacts

    result = apply_pbx_contacts(
        [
            {"id": 7, "contact_name": "Ok", "mobile": "07700900701"},
            {"id": True, "contact_name": "Bool id", "mobile": "07700900702"},
            {"contact_name": "No id", "mobile": "07700900703"},
            {"id": 8, "contact_name": "No number", "mobile": "call me"},
            {"id": 9, "contact_name": ["not", "text"], "company": "Co", "home": 7700},
            {"id": 10, "contact_name": "x" * 5000, "business": "0161 496 0710"},
            {"id": 11, "contact_name": "", "company": "", "other": "07700900711"},
            {"id": 12, "contact_name": "Nul", "mobile": "07700900712\x00"},
            {"id": "13", "contact_name": None, "company": "Only Co", "home2": "+44 113 496 0713"},
        ]
    )
    assert (result.read, result.skipped) == (9, 5)
    assert pbx_rows() == {
        "7": ("Ok", "", [("447700900701", "mobile")]),
        "10": ("x" * 200, "", [("441614960710", "business")]),  # cut to the column
        "11": ("07700900711", "", [("447700900711", "other")]),  # no name: the number stands in
        "13": ("Only Co", "Only Co", [("441134960713", "home2")]),  # no name: the company
    }


@pytest.mark.django_db(transaction=True)
def test_sweeper_lock_lets_one_of_many_sync(
    pbx: SimulatorThread, settings: SettingsWrapper
) -> None:
    """Six threads (each its own database connection, as processes would) race for the claim."""
    settings.CONTACT_SYNC_MINUTES = 60
    results: list[object] = []
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(sync.sync_if_due())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(result is not None for result in results) == 1
    assert len(pbx.log("company_contact/list")) == 1
    assert len(pbx_rows()) == 24
    # Within the interval nobody syncs again; once the key is gone, the next caller does.
    assert sync.sync_if_due() is None
    cache.delete(sync.scheduler.key)
    assert sync.sync_if_due() is not None


def test_sweeper_sync_off_or_failing(
    pbx: SimulatorThread, settings: SettingsWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.CONTACT_SYNC_MINUTES = 0
    assert sync.sync_if_due() is None
    assert pbx.log("company_contact/list") == []
    settings.CONTACT_SYNC_MINUTES = 60
    monkeypatch.setattr(sync.scheduler, "retry_after", 1)
    pbx.set_faults(http_500_rate=1.0)
    assert sync.sync_if_due() is None
    assert not Contact.objects.exists()
    pbx.set_faults(http_500_rate=0.0)
    assert sync.sync_if_due() is None  # the failed try still holds the key, briefly
    time.sleep(1.2)
    # A failure shortens the wait: retried after RETRY_SECONDS, not a whole interval later.
    assert sync.sync_if_due() is not None
    assert Contact.objects.filter(source="pbx").count() == 24


@pytest.mark.live
def test_server_sweeper_syncs_from_the_pbx(live_factory: LiveFactory) -> None:
    live = live_factory(CONTACT_SYNC_MINUTES="1")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and Contact.objects.filter(source="pbx").count() < 24:
        time.sleep(0.2)
    assert Contact.objects.filter(source="pbx").count() == 24
    assert len(live.sim.log("company_contact/list")) == 1
    assert "contact sync from the PBX: 24 listed" in Path(live.server.log_path).read_text()


@pytest.mark.live
@pytest.mark.scaleout
def test_one_process_of_a_cluster_syncs(transactional_db: None, tmp_path: Path) -> None:
    """Two admin_web processes and the listener, each with its sweeper, on PostgreSQL + Redis: the
    cache lock lets exactly one of them read the PBX's contacts."""
    require_scaleout()
    cluster = start_cluster(tmp_path, web=2, CONTACT_SYNC_MINUTES="1")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and Contact.objects.filter(source="pbx").count() < 24:
            time.sleep(0.2)
        time.sleep(2)  # every process has had its first tick (the sweeper ticks each second)
        assert Contact.objects.filter(source="pbx").count() == 24
        assert len(cluster.sim.log("company_contact/list")) == 1
    finally:
        cluster.stop()
