"""One entry point for PBX events, whether they came by WebSocket or by webhook."""

from __future__ import annotations

import logging
from datetime import datetime

from django.utils import timezone

from screening import actions, deciding
from screening.models import CallStatus
from screening.pbx.events import CallDetailRecord, CallStateChanged, Event, IncomingCall
from screening.runtime import run_blocking, schedule_expiry, spawn

log = logging.getLogger("screening.intake")


async def handle_event(event: Event, *, via: str, received_at: datetime | None = None) -> None:
    """Record the event; for a new 30016, arm the expiry timer in this process.

    ``received_at`` is when the frame reached us: the PBX's 10 s started when it sent the event,
    so time spent queued here must count against the window, not extend it.
    """
    if isinstance(event, IncomingCall):
        received_at = received_at or timezone.now()
        received = await run_blocking(actions.receive_call, event, via=via, received_at=received_at)
        call = received.call
        if received.auto_decision is not None:
            # A rule or a policy decided (and claimed) the call: send it without holding up intake.
            spawn(deciding.carry_out(call), f"auto-{call.pk}")
        elif received.created and call.status == CallStatus.PENDING:
            schedule_expiry(call)
    elif isinstance(event, CallStateChanged):
        await run_blocking(actions.record_call_state, event)
    elif isinstance(event, CallDetailRecord):
        await run_blocking(actions.record_cdr, event)
    else:
        log.debug("ignoring PBX event %s", event.type)
