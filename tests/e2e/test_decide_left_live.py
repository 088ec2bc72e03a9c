"""A client that goes away while its decision is under way, against a real `manage.py serve`:
Daphne tells Django, Django cancels the view, and the decision must still reach the PBX and be
recorded as the PBX answered it: on every way in (the dashboard's button and the API), wherever
the request was when the client left (waiting for its claim, or for the PBX's answer)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import requests
from django.db import transaction
from django.db.models import F

from screening.models import AuditEvent, Call, CallStatus
from tests.api.test_decide_live import token_session
from tests.conftest import Live
from tests.support.calls import arrived, pbx_requests
from tests.support.live import make_user, session_for, wait_for

pytestmark = pytest.mark.live

GIVES_UP_AFTER = 0.4  # seconds: the client's read timeout, then it closes the connection


@contextlib.contextmanager
def claim_held_up(live: Live, call: Call) -> Iterator[None]:
    """The call's row locked by another transaction (a busy database): the claim waits for it."""
    with transaction.atomic():
        Call.objects.filter(pk=call.pk).update(status=F("status"))
        yield


@contextlib.contextmanager
def pbx_slow(live: Live, call: Call) -> Iterator[None]:
    """The PBX takes its time over the decision."""
    live.sim.set_faults(latency_ms=1000)
    yield


@pytest.mark.parametrize("way", ["dashboard", "api"])
@pytest.mark.parametrize("waiting", [claim_held_up, pbx_slow], ids=["for-claim", "for-pbx"])
def test_a_decision_reaches_the_pbx_when_the_client_leaves_before_the_answer(
    live: Live, way: str, waiting: Callable[[Live, Call], contextlib.AbstractContextManager[None]]
) -> None:
    user = make_user("erin", first_name="Erin")
    if way == "api":
        http, url = token_session(user, "CRM sync"), f"{live.url}/api/v1/calls/{{}}/refuse"
    else:
        http, url = session_for(live.server, user), f"{live.url}/calls/{{}}/refuse"
    sent = live.sim.inject("07700900333", "02079460000", "peer-to-41")
    call = arrived(sent)
    with waiting(live, call), pytest.raises(requests.exceptions.ReadTimeout):
        # urllib3 closes the connection when the read times out: the client has gone.
        http.post(url.format(call.pk), timeout=(5, GIVES_UP_AFTER))
    wait_for(
        lambda: (
            Call.objects.get(pk=call.pk).status not in {CallStatus.PENDING, CallStatus.DECIDING}
        ),
        timeout=live.window + 5,
        what="the decision to be recorded",
    )
    call.refresh_from_db()
    assert call.status == CallStatus.REFUSED, call.status
    assert live.sim.call(sent["call_id"])["outcome"] == "refused"
    assert len(pbx_requests(live, "call/refuse_inbound", sent["channel_id"])) == 1
    assert AuditEvent.objects.filter(call=call, kind="pbx_response").count() == 1
