"""Trunk and rule administration in Django admin, against the simulated PBX over real sockets."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from screening.models import Call, Rule, Trunk
from screening.pbx.client import PbxClient
from screening.simulator import SimulatorThread
from tests.conftest import messages_of
from tests.support.live import free_port, make_user

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/screening/trunk/"


def run_action(admin_web: Client, action: str, trunks: list[Trunk]) -> list[str]:
    data = {"action": action, "index": 0, "_selected_action": [t.pk for t in trunks]}
    response = admin_web.post(CHANGELIST, data, follow=True)
    assert response.status_code == 200
    return messages_of(response)


def test_sync_creates_pbx_trunks_and_keeps_admin_labels(
    admin_web: Client, pbx: SimulatorThread
) -> None:
    mine = Trunk.objects.create(name="peer-to-41", label="Reception")
    auto = Trunk.objects.create(name="register-bt", label="register-bt", auto_created=True)
    gone = Trunk.objects.create(name="old-isdn", label="Old line")
    said = run_action(admin_web, "sync_from_pbx", [mine])
    assert "success: Synced from the PBX: 1 created, 1 updated, 1 unchanged." in said
    assert "warning: Not on the PBX (kept, for their call history): old-isdn" in said
    assert Trunk.objects.get(pk=mine.pk).label == "Reception"
    assert not Trunk.objects.get(pk=auto.pk).auto_created
    assert Trunk.objects.get(name="sip-gamma").label == "sip-gamma"
    assert Trunk.objects.filter(pk=gone.pk).exists()
    assert [e["endpoint"] for e in pbx.log("trunk/list")] == ["trunk/list"]


def test_sync_button_works_on_an_empty_list(admin_web: Client, pbx: SimulatorThread) -> None:
    page = admin_web.get(CHANGELIST)
    assert b"Sync trunks from PBX" in page.content
    response = admin_web.post(f"{CHANGELIST}sync/", follow=True)
    assert "success: Synced from the PBX: 3 created, 0 updated, 0 unchanged." in messages_of(
        response
    )
    assert Trunk.objects.count() == 3
    assert admin_web.get(f"{CHANGELIST}sync/").status_code == 302  # GET changes nothing
    clerk = Client()
    clerk.force_login(make_user("clerk", group=None, is_staff=True))  # no trunk permissions
    assert clerk.post(f"{CHANGELIST}sync/").status_code in {302, 403}
    assert Trunk.objects.count() == 3


def test_pbx_problems_are_admin_errors_not_500s(
    admin_web: Client, pbx: SimulatorThread, settings: SettingsWrapper
) -> None:
    trunk = Trunk.objects.create(name="peer-to-41")
    pbx.set_faults(http_500_rate=1.0)
    said = run_action(admin_web, "sync_from_pbx", [trunk])
    assert any(m.startswith("error: Could not read the PBX's trunks") for m in said), said
    said = run_action(admin_web, "turn_on_control_inbound", [trunk])
    assert any(m.startswith("error: The PBX did not take the change") for m in said), said
    settings.PBX_BASE_URL = f"http://127.0.0.1:{free_port()}"  # nothing listens
    said = run_action(admin_web, "sync_from_pbx", [trunk])
    assert any(m.startswith("error:") for m in said), said
    settings.PBX_BASE_URL = ""
    said = run_action(admin_web, "sync_from_pbx", [trunk])
    assert any("PBX_BASE_URL not set" in m for m in said), said


def monitor(pbx: SimulatorThread) -> dict[str, dict[str, int]]:
    client = PbxClient(pbx.base_url, pbx.client_id, pbx.client_secret)
    listed = client.trunk_monitors()
    return {item["name"]: item for item in listed}


def test_turn_on_control_inbound_call(admin_web: Client, pbx: SimulatorThread) -> None:
    client = PbxClient(pbx.base_url, pbx.client_id, pbx.client_secret)
    off = {"enb_call_status": 0, "enb_control_inbound_call": 0}
    client.update_trunk_monitor([{"trunk_id": 2, **off}, {"trunk_id": 3, **off}])
    assert monitor(pbx)["register-bt"]["enb_control_inbound_call"] == 0
    bt = Trunk.objects.create(name="register-bt")
    ghost = Trunk.objects.create(name="not-on-pbx")
    said = run_action(admin_web, "turn_on_control_inbound", [bt, ghost])
    assert "success: Control Inbound Call and Call Status turned on for: register-bt" in said
    assert "warning: Not found on the PBX: not-on-pbx" in said
    now = monitor(pbx)
    assert (
        now["register-bt"]["enb_control_inbound_call"],
        now["register-bt"]["enb_call_status"],
    ) == (1, 1)
    assert now["sip-gamma"]["enb_control_inbound_call"] == 0  # not selected, untouched
    (update,) = [
        e for e in pbx.log("trunk_status_monitor/update") if "register-bt" in str(e["body"])
    ]
    assert update["body"]["trunk_monitor_list"] == [
        {"trunk_id": 2, "name": "register-bt", "enb_call_status": 1, "enb_control_inbound_call": 1}
    ]


def add_calls(trunk: Trunk, **statuses: int) -> None:
    now = timezone.now()
    for status, count in statuses.items():
        for _ in range(count):
            n = Call.objects.count()
            Call.objects.create(
                pbx_call_id=f"1.{n}", channel_id=f"c{n}", trunk=trunk, status=status,
                received_at=now, deadline=now + timedelta(seconds=10),
            )  # fmt: skip


def test_the_list_shows_todays_counts_in_constant_queries(admin_web: Client) -> None:
    main = Trunk.objects.create(name="peer-to-41", label="Main", fallback_policy="refuse")
    add_calls(main, accepted=3, refused=2, expired=1, gone=1)
    yesterday = timezone.now() - timedelta(days=1, hours=1)
    add_calls(main, accepted=5)
    Call.objects.filter(pk__in=Call.objects.order_by("-pk").values("pk")[:5]).update(
        received_at=yesterday, deadline=yesterday
    )
    page = admin_web.get(CHANGELIST)
    row = next(r for r in page.context["cl"].result_list if r.pk == main.pk)
    assert (row.n_offered, row.n_accepted, row.n_refused, row.n_expired) == (7, 3, 2, 1)
    assert b"Refuse at once" in page.content

    with CaptureQueriesContext(connection) as few:
        admin_web.get(CHANGELIST)
    for i in range(5):
        add_calls(Trunk.objects.create(name=f"t{i}"), accepted=2)
    with CaptureQueriesContext(connection) as many:
        admin_web.get(CHANGELIST)
    assert len(many) == len(few)


def test_rule_admin_normalises_and_keeps_hit_fields_read_only(admin_web: Client) -> None:
    trunk = Trunk.objects.create(name="peer-to-41")
    form = admin_web.get("/admin/screening/rule/add/")
    assert b"refuse wins" in form.content  # the precedence is explained where rules are made
    response = admin_web.post(
        "/admin/screening/rule/add/",
        {
            "pattern": "020 7946",
            "match": "prefix",
            "trunk": trunk.pk,
            "action": "refuse",
            "enabled": "on",
            "note": "spam",
            "hit_count": "999",  # read-only: ignored
        },
    )
    assert response.status_code == 302, response.content
    rule = Rule.objects.get()
    assert (rule.normalised, rule.hit_count, rule.created_by.username) == ("44207946", 0, "root")
    assert admin_web.get("/admin/screening/rule/").status_code == 200
    bad = admin_web.post(
        "/admin/screening/rule/add/", {"pattern": "00", "match": "exact", "action": "accept"}
    )
    assert bad.status_code == 200
    assert Rule.objects.count() == 1
