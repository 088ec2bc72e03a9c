"""One entry point for PBX events, whether they came by WebSocket or by webhook."""

from __future__ import annotations

import logging

from django.utils import timezone

from screening import actions
from screening.models import CallStatus
from screening.pbx.events import CallDetailRecord, CallStateChanged, Event, IncomingCall
from screening.runtime import run_blocking, schedule_expiry

log = logging.getLogger("screening.intake")


async def handle_event(event: Event, *, via: str) -> None:
    """Record the event; for a new 30016, arm the expiry timer in this process."""
    if isinstance(event, IncomingCall):
        # Stamp before any queueing: the PBX's 10 s started when it sent the event.
        received_at = timezone.now()
        received = await run_blocking(actions.receive_call, event, via=via, received_at=received_at)
        call = received.call
        if received.created and call.status == CallStatus.PENDING:
            schedule_expiry(call.pk, call.deadline)
    elif isinstance(event, CallStateChanged):
        await run_blocking(actions.record_call_state, event)
    elif isinstance(event, CallDetailRecord):
        await run_blocking(actions.record_cdr, event)
    else:
        log.debug("ignoring PBX event %s", event.type)
