"""The fallback policy: what happens to a call when nobody online may decide it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from screening.models import AuditEvent, Call, Trunk
from tests.conftest import Live
from tests.support.live import make_user, wait_for
from tests.support.sockets import OperatorSocket

pytestmark = pytest.mark.live


def final(live: Live, sent: dict[str, Any], status: str) -> Call:
    return wait_for(
        lambda: Call.objects.filter(pbx_call_id=sent["call_id"], status=status).first(),
        timeout=live.window + 5,
        what=f"the call to be {status}",
    )


@pytest.mark.parametrize("policy", ["accept", "refuse"])
def test_nobody_online_the_fallback_policy_decides_at_once(live: Live, policy: str) -> None:
    Trunk.objects.create(name="peer-to-41", fallback_policy=policy)
    make_user("alice")  # an operator exists but has no dashboard open
    sent = live.sim.inject("07700900123", "02079460000", "peer-to-41")
    call = final(live, sent, f"{policy}ed" if policy == "accept" else "refused")
    assert call.decided_by_kind == "fallback"
    assert call.decided_by is None
    assert live.sim.call(sent["call_id"])["outcome"] == call.status
    claimed = AuditEvent.objects.get(call=call, kind="claimed")
    assert "nobody online" in claimed.message
    assert not AuditEvent.objects.filter(call=call, kind="pushed").exists()
    # Decided well inside the window, not at its end.
    assert (call.finished_at - call.received_at).total_seconds() < live.window / 2


def test_an_operator_online_gets_the_call_instead(live: Live) -> None:
    Trunk.objects.create(name="peer-to-41", fallback_policy="refuse")
    with OperatorSocket(live, make_user("alice")) as socket:
        sent = live.sim.inject("07700900123", "02079460000", "peer-to-41")
        wait_for(lambda: "pending" in socket.statuses(sent["call_id"]), what="the push")
        call = Call.objects.get(pbx_call_id=sent["call_id"])
        assert call.status == "pending"
        assert AuditEvent.objects.filter(call=call, kind="pushed").exists()
        assert live.sim.call(sent["call_id"])["outcome"] == "pending"
    # Nobody decides: the PBX's window, not the fallback policy, ends it.
    call = final(live, sent, "expired")
    assert call.decided_by_kind == "pbx_timeout"
    assert live.sim.call(sent["call_id"])["outcome"] == "auto_accepted"

    # The operator closed the dashboard: the next call falls back again.
    nxt = live.sim.inject("07700900124", "02079460000", "peer-to-41")
    assert final(live, nxt, "refused").decided_by_kind == "fallback"


def test_only_operators_of_the_trunks_group_count(live: Live) -> None:
    sales = Group.objects.create(name="Sales desk")
    Trunk.objects.create(name="register-bt", operator_group=sales, fallback_policy="accept")
    with OperatorSocket(live, make_user("olly")):  # an operator, but not of Sales desk
        sent = live.sim.inject("07700900123", "01134960100", "register-bt")
        assert final(live, sent, "accepted").decided_by_kind == "fallback"
        seller = make_user("sam")
        seller.groups.add(sales)
        with OperatorSocket(live, seller) as socket:
            nxt = live.sim.inject("07700900124", "01134960100", "register-bt")
            wait_for(lambda: "pending" in socket.statuses(nxt["call_id"]), what="the push")


def test_leave_it_to_the_window_pushes_even_with_nobody_online(live: Live) -> None:
    Trunk.objects.create(name="peer-to-41")  # fallback_policy defaults to "window"
    sent = live.sim.inject("07700900123", "02079460000", "peer-to-41")
    call = wait_for(lambda: Call.objects.filter(pbx_call_id=sent["call_id"]).first())
    assert call.status == "pending"
    assert final(live, sent, "expired").decided_by_kind == "pbx_timeout"
