"""An operator's request to decide a call, as every HTTP entry point takes it: the dashboard's
``POST /calls/<id>/<action>`` and the API's ``POST /api/v1/calls/<id>/<action>``.

One implementation, so both answer alike: who may decide (``decide_call`` and the trunk's operator
group), the reason and note checked before anything is claimed, the claim (exactly one claimant
wins: screening.calls.decisions), the PBX request, the reason recorded only after the PBX carried
out the refusal, and the answer: 200 carried out, 409 someone else decided or the window is
closing, 410 the call is gone, 502 the PBX did not carry it out.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.utils.translation import gettext as _

from screening import runtime
from screening.calls import decisions, reasons, store
from screening.calls.access import DECIDE_PERMISSION, may_decide
from screening.calls.memory import ActionError
from screening.calls.payload import call_payload
from screening.cpu_stages import stage
from screening.models import MAX_PK, Call, CallStatus, Decision
from screening.runtime import run_blocking

log = logging.getLogger("screening.calls.decide_requests")


@dataclass(frozen=True)
class Answer:
    """What the endpoint answers: an HTTP status and its JSON body."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Claimed:
    """A request past its checks: the claimed call (or the conflict) and the reason to record."""

    claim: Call | decisions.DecideResult
    reason: str
    note: str


def refused(status: int, message: str) -> Answer:
    return Answer(status, {"ok": False, "error": message})


def claim_for(
    user: AbstractBaseUser | AnonymousUser,
    pk: int,
    action: str,
    fields: Callable[[], dict[str, Any]],
    *,
    via: str = "",
) -> Answer | Claimed:
    """The checks and the claim (database pool). ``fields`` reads the request's ``reason`` and
    ``note`` (it may raise ``ActionError`` for a body it cannot read); ``via`` names the way in
    for the audit ("API token 'CRM sync'"), blank for the dashboard."""
    if not user.is_authenticated:
        return refused(401, _("Log in to decide calls."))
    if not user.has_perm(DECIDE_PERMISSION):
        return refused(403, _("You are not allowed to decide calls."))
    if action not in Decision.values:
        return refused(
            404, _("Unknown action %(action)r: use accept or refuse.") % {"action": action[:20]}
        )
    if pk > MAX_PK:  # <int:> takes any digits; the database would fail on an out-of-range key
        return refused(404, _("No such call."))
    try:  # checked before the claim: a bad reason decides nothing
        reason, note = reasons.parse(action, fields())
    except ActionError as exc:
        return refused(exc.status, exc.message)
    try:
        # Loaded once, with what the push needs: the claim then updates this copy, not a reload.
        call = store.load(pk)
    except Call.DoesNotExist:
        return refused(404, _("No such call."))
    if not may_decide(user, call.trunk):
        return refused(403, _("This call's trunk is screened by another operator group."))
    return Claimed(decisions.claim(call, action, user=user, via=via), reason, note)


async def decide(claiming: Awaitable[Answer | Claimed], pk: int) -> Answer:
    """``claiming`` (an entry point's checks and claim), then ``complete`` for a won claim, in a
    task that runs to its end even when the client goes away: once claimed, a call must reach the
    PBX and its record must say what the PBX answered, never stay *deciding*."""

    async def claim_and_complete() -> Answer:
        claimed = await claiming
        return await complete(claimed) if isinstance(claimed, Claimed) else claimed

    return await runtime.to_the_end(claim_and_complete(), f"decide-request-{pk}")


@stage("request")
async def complete(claimed: Claimed) -> Answer:
    """The PBX request for a won claim, the reason, and the answer; a lost claim is answered with
    its conflict. Await it with the claim in ``runtime.to_the_end`` (``decide`` does)."""
    if isinstance(claimed.claim, Call):
        result = await decisions.carry_out(claimed.claim)
    else:
        result = claimed.claim  # the conflict: someone else decided, or the window is closing
    call = result.call
    if claimed.reason and result.ok and call.status == CallStatus.REFUSED:
        # Only now, after the PBX carried out the refusal: the reason never delays it.
        try:
            call = await run_blocking(reasons.record, call, claimed.reason, claimed.note)
        except ActionError as exc:  # the refusal stands; the operator can set the reason again
            log.warning("call %s: reason not recorded: %s", call.pbx_call_id, exc.message)
    payload = call_payload(call)
    body = {
        "ok": result.ok,
        "status": call.status,
        "status_label": call.get_status_display(),
        "decided_by": payload["decided_by"],
        "pbx_errcode": call.pbx_errcode,
        "pbx_errmsg": call.pbx_errmsg,
        "pbx_round_trip_ms": call.pbx_round_trip_ms,
        "call": payload,
    }
    if result.ok:
        return Answer(200, body)
    body["error"] = result.reason
    if result.conflict:
        return Answer(409, body)
    return Answer(410 if call.status == CallStatus.GONE else 502, body)
