"""Sending a decision to the PBX and translating its answer (errcode) into the call's outcome.

No database work here: the web process runs ``ask`` in its PBX pool, where threads mostly wait on
the network, apart from the database workers (``screening.runtime``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from django.conf import settings

from screening import health
from screening.cpu_stages import stage
from screening.models import CallStatus, Decision
from screening.pbx import preopen
from screening.pbx.client import (
    PbxAuthError,
    PbxClient,
    PbxError,
    PbxNotConfigured,
    PbxTransportError,
)

# Yeastar answers 70130 "CAHNNEL ID NOT FOUND" when the channel is gone (caller hung up, or the PBX
# already routed it). Which code a decision sent after the window gets is not documented, so
# 60001 (DATA NOT FOUND) is read the same way: tolerant of either (docs/pbx.md, "Decisions").
CHANNEL_GONE_ERRCODES = frozenset({70130, 60001})


def endpoint_for(decision: str) -> str:
    return "call/accept_inbound" if decision == Decision.ACCEPT else "call/refuse_inbound"


@dataclass(frozen=True)
class PbxAnswer:
    """What became of a decision at the PBX, ready to record."""

    status: str
    message: str
    errcode: int | None = None
    errmsg: str = ""
    round_trip_ms: float | None = None

    @property
    def carried_out(self) -> bool:
        return self.status in {CallStatus.ACCEPTED, CallStatus.REFUSED}


_local = threading.local()


def _thread_client() -> PbxClient:
    """One PBX client per worker thread, built once from the settings rather than per decision
    (the token itself is shared by every client through the cache)."""
    key = (settings.PBX_BASE_URL, settings.PBX_CLIENT_ID, settings.PBX_CLIENT_SECRET)
    cached = getattr(_local, "pbx", None)
    if cached is None or cached[0] != key:
        cached = _local.pbx = (key, PbxClient.from_settings())
    return cached[1]


@stage("pbx")
def ask(
    channel_id: str, decision: str, deadline: float, client: PbxClient | None = None
) -> PbxAnswer:
    """Send ``decision`` for the held channel; never raises for anything the PBX or the network
    does. ``deadline`` (epoch seconds) is the PBX's own cut-off: an answer later than that is
    worthless, the call is already routed."""
    try:
        pbx = client or _thread_client()
        send = pbx.accept_inbound if decision == Decision.ACCEPT else pbx.refuse_inbound
        with preopen.sending_for(channel_id):  # on the connection opened for it, if any
            response = send(channel_id, deadline=deadline)
    except PbxAuthError as exc:
        message = f"Failed: the PBX refused our credentials ({exc.errcode} {exc.errmsg})"
        return PbxAnswer(CallStatus.FAILED, message, exc.errcode, exc.errmsg)
    except PbxError as exc:
        if exc.errcode in CHANNEL_GONE_ERRCODES:
            message = f"Gone: the PBX no longer has this call ({exc.errcode} {exc.errmsg})"
            return PbxAnswer(CallStatus.GONE, message, exc.errcode, exc.errmsg)
        message = f"Failed: the PBX answered {exc.errcode} {exc.errmsg}"
        return PbxAnswer(CallStatus.FAILED, message, exc.errcode, exc.errmsg)
    except PbxTransportError as exc:
        message = (
            f"Failed: no answer from the PBX in time ({exc.reason}); the PBX routes the call "
            "itself unless the request reached it"
            if exc.timed_out
            else f"Failed: {exc.reason}"
        )
        return PbxAnswer(CallStatus.FAILED, message, errmsg=exc.reason[:256])
    except PbxNotConfigured as exc:
        return PbxAnswer(CallStatus.FAILED, f"Failed: {exc}", errmsg=str(exc)[:256])
    except health.UNAVAILABLE as exc:
        # The shared token lives in the cache: with Redis down no request can be sent.
        reason = f"the shared PBX token could not be read: {health.describe(exc)}"
        return PbxAnswer(CallStatus.FAILED, f"Failed: {reason}", errmsg=reason[:256])
    if decision == Decision.ACCEPT:
        status, message = CallStatus.ACCEPTED, "Accepted: the PBX routed the call"
    else:
        status, message = CallStatus.REFUSED, "Refused: the PBX dropped the call"
    return PbxAnswer(status, message, 0, "SUCCESS", response.round_trip_ms)
