"""Screening rules on a live server: the rule decides at the PBX, and no operator sees the call
pending."""

from __future__ import annotations

import pytest

from screening.models import Call, Rule
from tests.conftest import Live
from tests.support.live import make_user, wait_for
from tests.support.sockets import OperatorSocket

pytestmark = pytest.mark.live


def rule(pattern: str, action: str, match: str = "exact", **extra: object) -> Rule:
    return Rule.objects.create(pattern=pattern, action=action, match=match, **extra)


def test_rule_decides_live_call_at_the_pbx_and_no_operator_sees_it_pending(live: Live) -> None:
    accepted_here = rule("+44 20 7946 0123", "accept")
    blocked = rule("020 7946", "refuse", "prefix")
    with OperatorSocket(live, make_user("alice")) as socket:
        refused_call = live.sim.inject("02079460999", "02079460000", "peer-to-41")
        vip_call = live.sim.inject("020 7946 0123", "02079460000", "peer-to-41")
        for sent, status in ((refused_call, "refused"), (vip_call, "accepted")):
            wait_for(
                lambda sent=sent, status=status: Call.objects.filter(
                    pbx_call_id=sent["call_id"], status=status
                ).exists(),
                what=f"the rule to {status} the call",
            )
            assert live.sim.call(sent["call_id"])["outcome"] == status
        for sent, status in ((refused_call, "refused"), (vip_call, "accepted")):
            wait_for(lambda sent=sent, status=status: status in socket.statuses(sent["call_id"]))
            seen = socket.statuses(sent["call_id"])
            assert "pending" not in seen, seen
    call = Call.objects.get(pbx_call_id=refused_call["call_id"])
    assert (call.decided_by_kind, call.rule) == ("rule", blocked)
    assert Call.objects.get(pbx_call_id=vip_call["call_id"]).rule == accepted_here
    blocked.refresh_from_db()
    assert blocked.hit_count == 1
