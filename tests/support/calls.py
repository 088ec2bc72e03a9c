"""Waiting for a call the simulator offered, and reading what the PBX was asked about it: the two
questions every live test asks; and a 30016 for tests that hand one to intake directly."""

from __future__ import annotations

from typing import Any

from screening.models import Call
from screening.pbx.events import IncomingCall
from tests.support.live import wait_for


def incoming(call_id: str = "1700000000.1", caller: str = "07700900123") -> IncomingCall:
    """A 30016 as the parser hands it to intake: ``caller`` on trunk peer-to-41, its channel
    named after ``call_id``."""
    return IncomingCall(
        call_id=call_id,
        channel_id=f"PJSIP/trunk-x-{call_id}",
        caller=caller,
        called="02079460000",
        trunk_name="peer-to-41",
        sn="SN",
        member_status="ALERT",
    )


def arrived(sent: dict[str, Any], status: str | None = None, timeout: float = 10.0) -> Call:
    """The call the simulator's ``inject`` answered with ``sent``, once pbxscreen stored it (and,
    with ``status``, once it reached that status)."""

    def find() -> Call | None:
        rows = Call.objects.filter(pbx_call_id=sent["call_id"])
        return (rows.filter(status=status) if status else rows).first()

    return wait_for(find, timeout=timeout, what=f"the call to reach pbxscreen ({status or 'any'})")


def pbx_requests(live: Any, endpoint: str, channel_id: str) -> list[dict[str, Any]]:
    """The requests to ``endpoint`` the live setup's simulator got for ``channel_id``."""
    return [
        e for e in live.sim.log(endpoint) if (e.get("body") or {}).get("channel_id") == channel_id
    ]
