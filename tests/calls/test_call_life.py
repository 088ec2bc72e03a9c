"""The call's life in process (screening.calls) where the live tests do not reach: sweeping after
a dead process, the append-only audit, and decisions on the production path (claim in the
database pool, the request in the PBX pool, the record) against the simulator."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from screening.calls import decisions, endings, intake
from screening.calls.roles import setup_roles
from screening.models import AuditEvent, Call, CallStatus, PbxOutcome, Trunk
from screening.pbx.client import PbxClient
from screening.pbx.events import IncomingCall
from screening.simulator import SimulatorThread
from tests.support.live import make_user, until

pytestmark = pytest.mark.django_db(transaction=True)

# The production path: the claim in the database pool, the request in the PBX pool, the record.
decide = async_to_sync(decisions.decide)


def incoming(call_id: str = "1700000000.1", channel: str = "PJSIP/trunk-x-1") -> IncomingCall:
    return IncomingCall(
        call_id=call_id,
        channel_id=channel,
        caller="07700900123",
        called="02079460000",
        trunk_name="peer-to-41",
        sn="SN",
        member_status="ALERT",
    )


def test_sweeper_expires_calls_whose_timer_died_with_its_process() -> None:
    call = intake.receive_call(incoming(), via="test").call
    Call.objects.filter(pk=call.pk).update(deadline=timezone.now() - timedelta(seconds=5))
    assert endings.sweep() == 1
    call.refresh_from_db()
    assert call.status == CallStatus.EXPIRED
    assert AuditEvent.objects.filter(call=call, kind="expired").count() == 1
    assert endings.sweep() == 0  # idempotent


def test_sweeper_gives_up_on_a_decision_whose_process_died() -> None:
    call = intake.receive_call(incoming(), via="test").call
    Call.objects.filter(pk=call.pk).update(
        status=CallStatus.DECIDING, deadline=timezone.now() - timedelta(minutes=2)
    )
    assert endings.sweep() == 1
    call.refresh_from_db()
    assert call.status == CallStatus.FAILED
    assert "outcome unknown" in AuditEvent.objects.get(call=call, kind="failed").message


@pytest.mark.parametrize(
    ("reported", "says"),
    [
        (PbxOutcome.ANSWERED, "answered"),
        (PbxOutcome.ROUTED, "routed to an extension"),
        (PbxOutcome.DROPPED, "dropped by the pbx"),
        (PbxOutcome.CALLER_HUNG_UP, "caller hung up"),
        (PbxOutcome.NO_ANSWER, "not answered"),
    ],
)
def test_a_given_up_decision_names_what_the_pbxs_reports_showed(reported: str, says: str) -> None:
    call = intake.receive_call(incoming(), via="test").call
    Call.objects.filter(pk=call.pk).update(
        status=CallStatus.DECIDING,
        deadline=timezone.now() - timedelta(minutes=2),
        pbx_outcome=reported,  # a 30011/30012 arrived while the decision hung
    )
    assert endings.sweep() == 1
    call.refresh_from_db()
    assert call.status == CallStatus.FAILED
    assert call.pbx_errmsg == f"no answer to our request; PBX reports: {says}"
    row = AuditEvent.objects.get(call=call, kind="failed")
    assert row.message.endswith(f"the PBX's own reports show the call: {says}")
    assert "unknown" not in row.message


def test_a_pending_call_is_not_swept_before_its_deadline() -> None:
    call = intake.receive_call(incoming(), via="test").call
    assert endings.sweep() == 0
    assert not endings.expire(call.pk)
    assert Call.objects.get(pk=call.pk).status == CallStatus.PENDING


def test_duplicate_delivery_keeps_one_call_and_records_the_duplicate() -> None:
    first = intake.receive_call(incoming(), via="websocket")
    again = intake.receive_call(incoming(), via="webhook")
    assert first.created
    assert not again.created
    assert again.call.pk == first.call.pk
    assert Call.objects.count() == 1
    assert AuditEvent.objects.filter(kind="duplicate").count() == 1


def test_caller_history_counts_earlier_calls_and_the_last_outcome() -> None:
    user = make_user("alice", first_name="Alice", last_name="Operator")
    first = intake.receive_call(incoming("1.1", "c1"), via="test").call
    Call.objects.filter(pk=first.pk).update(
        status=CallStatus.REFUSED, decided_by=user, received_at=timezone.now() - timedelta(days=2)
    )
    old = intake.receive_call(incoming("1.2", "c2"), via="test").call
    Call.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(days=45))
    third = intake.receive_call(incoming("1.3", "c3"), via="test").call
    assert third.history["count"] == 1  # the 45-day-old call is outside the 30 days
    assert third.history["last"]["status"] == "refused"
    assert third.history["last"]["decided_by"] == "Alice Operator"


def test_audit_rows_cannot_be_changed_or_deleted() -> None:
    call = intake.receive_call(incoming(), via="test").call
    row = AuditEvent.objects.filter(call=call).first()
    assert row is not None
    row.message = "rewritten"
    with pytest.raises(TypeError):
        row.save()
    with pytest.raises(TypeError):
        row.delete()
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(call=call).update(message="x")
    with pytest.raises(TypeError):
        AuditEvent.objects.filter(call=call).delete()


def test_decide_against_the_pbx_from_this_process() -> None:
    with SimulatorThread(call_rate=0.0) as sim:
        sent = sim.inject("07700900123", "02079460000", "peer-to-41")
        event = IncomingCall(
            sent["call_id"], sent["channel_id"], "077", "020", "peer-to-41", "S", ""
        )
        call = intake.receive_call(event, via="test").call
        client = PbxClient(sim.base_url, sim.client_id, sim.client_secret, cache=cache)
        result = decide(call.pk, "refuse", user=make_user("bob"), client=client)
        assert result.ok
        assert result.call.status == CallStatus.REFUSED
        again = decide(call.pk, "accept", client=client)
        assert again.conflict
        assert "Already decided by bob" in again.reason
        assert sim.call(sent["call_id"])["outcome"] == "refused"
        assert len(sim.log("call/accept_inbound")) == 0


@pytest.mark.parametrize("leaves_after", [0.0, 0.05, 0.2], ids=["at-once", "claiming", "sent"])
def test_a_decision_is_carried_out_when_whoever_asked_goes_away(leaves_after: float) -> None:
    """A browser closing mid-request cancels the view, wherever it is: before the claim, during
    it, or while the PBX request is out. The PBX must still get the decision and the record must
    say what the PBX answered, never leave the call deciding."""
    with SimulatorThread(call_rate=0.0) as sim:
        sim.set_faults(latency_ms=300)  # the PBX takes its time: the caller leaves before it
        sent = sim.inject("07700900123", "02079460000", "peer-to-41")
        event = IncomingCall(
            sent["call_id"], sent["channel_id"], "077", "020", "peer-to-41", "S", ""
        )
        call = intake.receive_call(event, via="test").call
        client = PbxClient(sim.base_url, sim.client_id, sim.client_secret, cache=cache)
        dora = make_user("dora")
        name = f"decide-{call.pk}"

        async def ask_then_leave() -> None:
            asking = asyncio.ensure_future(
                decisions.decide(call.pk, "accept", user=dora, client=client)
            )
            carrying = await until(
                lambda: next((t for t in asyncio.all_tasks() if t.get_name() == name), None),
                what="the decision's own task",
            )
            await asyncio.sleep(leaves_after)
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
            assert not carrying.done()  # the PBX has not answered yet: the caller left first
            await asyncio.wait_for(carrying, 30)  # it finishes on this loop regardless

        asyncio.run(ask_then_leave())
        call.refresh_from_db()
        assert call.status == CallStatus.ACCEPTED
        assert sim.call(sent["call_id"])["outcome"] == "accepted"
        assert AuditEvent.objects.filter(call=call, kind="pbx_response").count() == 1


def test_a_dead_pbx_is_a_recorded_failure() -> None:
    call = intake.receive_call(incoming(), via="test").call
    client = PbxClient("http://127.0.0.1:9", "id", "secret", cache=cache)  # nothing listens on 9
    result = decide(call.pk, "accept", user=make_user("carl"), client=client)
    assert not result.ok
    assert result.call.status == CallStatus.FAILED
    assert AuditEvent.objects.filter(call=call, kind="failed").exists()


def test_setup_roles_is_idempotent() -> None:
    setup_roles()
    groups = setup_roles()
    assert {p.codename for p in groups["Operators"].permissions.all()} == {"decide_call"}
    assert "view_audit" in {p.codename for p in groups["Supervisors"].permissions.all()}


def test_calls_and_audit_are_read_only_in_admin() -> None:
    admin = make_user("root", group=None, is_staff=True, is_superuser=True)
    call = intake.receive_call(incoming(), via="test").call
    web = Client()
    web.force_login(admin)
    assert web.get("/admin/screening/call/").status_code == 200
    assert web.get(f"/admin/screening/call/{call.pk}/change/").status_code == 200
    assert web.get("/admin/screening/call/add/").status_code == 403
    assert web.post(f"/admin/screening/call/{call.pk}/delete/").status_code == 403
    row = AuditEvent.objects.filter(call=call).first()
    assert row is not None
    assert web.post(f"/admin/screening/auditevent/{row.pk}/delete/").status_code == 403
    trunk = Trunk.objects.get(name="peer-to-41")
    changed = web.post(
        f"/admin/screening/trunk/{trunk.pk}/change/",
        {
            "name": trunk.name,
            "label": "Main line",
            "screening_enabled": "",
            "fallback_policy": "window",
            "country_code": "44",
            "national_prefix": "0",
            "international_prefix": "00",
        },
    )
    assert changed.status_code == 302
    trunk.refresh_from_db()
    assert trunk.label == "Main line"
    assert not trunk.screening_enabled
