"""A link outage end to end: the simulator keeps offering calls while the server's listener cannot
subscribe; once the link is back every call it offered is in the audit, the missed ones as
unscreened with the PBX's own outcome, none twice."""

from __future__ import annotations

import time
from typing import Any

import pytest

from screening.models import AuditEvent, AuditKind, Call, CallStatus, LinkOutage, PbxOutcome, Trunk
from tests.conftest import Live
from tests.support.calls import arrived
from tests.support.live import make_user, session_for, wait_for

pytestmark = pytest.mark.live

OUTAGE_SECONDS = 20.0


def link_state(live: Live) -> str:
    return live.server.health()["pbx_link"]["state"]


def test_calls_offered_while_the_link_was_down_are_recorded_unscreened_once(live: Live) -> None:
    Trunk.objects.create(name="peer-to-41")
    Trunk.objects.create(name="register-bt", screening_enabled=False)
    seen = live.sim.inject("07700900800", "02079460000", "peer-to-41")
    seen_call = arrived(seen)

    live.sim.set_faults(refuse_websocket=True)
    live.sim.drop_sockets()
    wait_for(lambda: link_state(live) != "up", timeout=10, what="the link to go down")
    dropped = time.monotonic()
    missed: list[dict[str, Any]] = []
    not_screened: list[dict[str, Any]] = []
    i = 0
    while time.monotonic() - dropped < OUTAGE_SECONDS - 2.5:
        # Some callers hang up in the hold, the rest the PBX routes itself after its window.
        hangup = 0.5 if i % 3 == 0 else None
        missed.append(
            live.sim.inject(f"0770090{i:04d}", "02079460000", "peer-to-41", hangup_after=hangup)
        )
        if i == 2:
            not_screened.append(live.sim.inject("07700900999", "01134960100", "register-bt"))
        i += 1
        time.sleep(2.5)  # pacing the offers through the outage, not a timing assertion
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - dropped)))
    live.sim.set_faults(refuse_websocket=False)
    wait_for(lambda: link_state(live) == "up", timeout=10, what="the link to come back")

    # Calls still ringing when the link came back are recorded from their own later record.
    wait_for(
        lambda: all(live.sim.call(c["call_id"])["state"] == "ended" for c in missed),
        timeout=30,
        what="the PBX to end every call",
    )
    ids = [c["call_id"] for c in missed]
    wait_for(
        lambda: Call.objects.filter(pbx_call_id__in=ids).count() == len(ids),
        timeout=15,
        what="every missed call to be recorded",
    )

    assert len(missed) >= 6
    for sent in missed:
        sim_call = live.sim.call(sent["call_id"])
        assert sim_call["delivered"] == 0  # the PBX never reached us with it
        calls = Call.objects.filter(pbx_call_id=sent["call_id"])
        assert calls.count() == 1
        call = calls.get()
        assert call.status == CallStatus.UNSCREENED
        assert call.caller == sim_call["from"]
        answered = sim_call["answered_at"] is not None
        assert call.pbx_outcome == (PbxOutcome.ANSWERED if answered else PbxOutcome.NO_ANSWER)
        rows = AuditEvent.objects.filter(call=call, kind=AuditKind.UNSCREENED)
        assert rows.count() == 1
        assert rows.get().detail["pbx_status"] == ("ANSWERED" if answered else "NO ANSWER")
    # The call we saw is there once, as we screened it; the trunk not screened has nothing.
    assert Call.objects.filter(pbx_call_id=seen["call_id"]).count() == 1
    seen_call.refresh_from_db()
    assert seen_call.status != CallStatus.UNSCREENED
    assert not Call.objects.filter(pbx_call_id=not_screened[0]["call_id"]).exists()

    outage = wait_for(
        lambda: LinkOutage.objects.filter(reconciled_at__isnull=False, unscreened__gt=0).first(),
        timeout=10,
        what="the outage window to be reconciled",
    )
    assert outage.ended_at is not None
    assert outage.unscreened == len(missed)
    assert outage.offered == len(missed) + 1  # the call we saw was offered in the window's edge

    # A supervisor finds them in the audit, its CSV and on the statistics page.
    http = session_for(live.server, make_user("sue", group="Supervisors"))
    listing = http.get(f"{live.url}/audit/", params={"outcome": "unscreened"}, timeout=10).text
    export = http.get(
        f"{live.url}/audit/export.csv", params={"outcome": "unscreened"}, timeout=10
    ).text
    assert export.count(",unscreened,") == len(missed)
    for sent in missed:
        assert live.sim.call(sent["call_id"])["from"] in listing
    stats_page = http.get(f"{live.url}/stats/", timeout=10).text
    assert f'<span class="tile-value">{len(missed)}</span> unscreened' in stats_page
