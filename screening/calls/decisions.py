"""Deciding a call: claim it (exactly one claimant wins), ask the PBX, record the answer.

There is one way to decide a call, in three steps used by every caller (the decide view, a rule
or policy at intake, the tests):

1. ``claim`` (database pool): one conditional UPDATE ``… WHERE status = pending AND deadline >
   now + margin``; the loser gets a ``DecideResult`` with the conflict. The claim and the
   "request sent" audit row are committed *before* the request goes out, so a crash after it
   leaves a visible trace that the sweeper finishes.
2. ``screening.pbx.answers.ask`` (PBX pool): the REST request, its answer translated.
3. ``finish`` (database pool): the answer recorded, the call pushed.

``decide`` is all three, in a task that runs to its end even when whoever asked goes away (a
browser closing mid-request cancels the view): a claimed call left unsent would sit *deciding*
until the PBX routed it by itself. The HTTP entry points (screening.calls.decide_requests) run
their claim and ``carry_out`` in such a task too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from screening.calls import precedent, store
from screening.calls.outcomes import settle_outcome
from screening.calls.payload import user_name
from screening.cpu_stages import stage
from screening.models import AuditKind, Call, CallStatus, DecidedBy, Decision, Rule
from screening.pbx import answers
from screening.pbx.client import PbxClient
from screening.runtime import run_blocking, run_pbx, to_the_end
from screening.speedups import priority

log = logging.getLogger("screening.calls.decisions")


@dataclass(frozen=True)
class DecideResult:
    call: Call
    ok: bool  # the PBX carried out the decision
    conflict: bool = False  # someone else decided, or the window closed, before our claim
    reason: str = ""


async def decide(
    call: Call | int,
    decision: str,
    *,
    user: AbstractBaseUser | None = None,
    client: PbxClient | None = None,
) -> DecideResult:
    """An operator's decision, from claim to recorded answer, carried to its end whatever
    happens to the caller. Raises ``Call.DoesNotExist``."""

    async def claim_and_carry_out() -> DecideResult:
        claimed = await run_blocking(claim, call, decision, user=user)
        if isinstance(claimed, DecideResult):
            return claimed
        return await carry_out(claimed, client)

    pk = call.pk if isinstance(call, Call) else call
    return await to_the_end(claim_and_carry_out(), f"decide-{pk}")


@stage("claim")
def claim(
    call: Call | int, decision: str, *, user: AbstractBaseUser | None = None, via: str = ""
) -> Call | DecideResult:
    """An operator's claim: the claimed call, or the conflict.

    ``call`` is a pk, or the call as loaded with its trunk (the view loads it to check access),
    which saves the reload after the claim. ``via`` names the way the decision came in when it
    was not the dashboard ("API token 'CRM sync'"), for the audit. Raises ``Call.DoesNotExist``
    for an unknown call.
    """
    if decision not in Decision.values:
        raise ValueError(f"unknown decision {decision!r}")
    claimed = claim_as(call, decision, user, DecidedBy.OPERATOR, via=via)
    if claimed is None:
        current = store.load(call.pk if isinstance(call, Call) else call)
        return DecideResult(current, ok=False, conflict=True, reason=_conflict_reason(current))
    return claimed


def claim_as(
    call: Call | int,
    decision: str,
    user: AbstractBaseUser | None,
    by_kind: str,
    *,
    rule: Rule | None = None,
    note: str = "",
    announce: bool = True,
    via: str = "",
    **detail: Any,
) -> Call | None:
    """Claim ``call`` for ``by_kind`` (an operator, a rule, a policy); None if it is not pending
    or its window is closing. Joins the caller's transaction when there is one (intake).
    ``announce=False`` skips the push of the claim, for a call no operator has seen yet."""
    now = timezone.now()
    margin = timedelta(seconds=settings.SCREEN_SAFETY_MARGIN_SECONDS)
    endpoint = answers.endpoint_for(decision)
    changes = {
        "status": CallStatus.DECIDING,
        "decision": decision,
        "decided_by": user,
        "decided_by_kind": by_kind,
        "rule": rule,
        "claimed_at": now,
    }
    with priority.urgent(), transaction.atomic():
        claimed = store.transition(
            call, changes, status=CallStatus.PENDING, deadline__gt=now + margin
        )
        if claimed is None:
            return None
        who = user_name(user) or claimed.get_decided_by_kind_display()
        message = (
            f"{who} decided to {decision}"
            + (f" via {via}" if via else "")
            + (f": {note}" if note else "")
        )
        if via:
            detail["via"] = via
        store.record(
            store.event(
                claimed, AuditKind.CLAIMED, message, actor=user, at=now, by_kind=by_kind, **detail
            ),
            # Saved before the request goes out (a crash after this leaves a visible trace).
            store.event(
                claimed,
                AuditKind.PBX_REQUEST,
                f"POST {endpoint}",
                actor=user,
                at=now,
                endpoint=endpoint,
                channel_id=claimed.channel_id,
            ),
        )
        if announce:
            store.send_call_on_commit(claimed)
    return claimed


def _conflict_reason(call: Call) -> str:
    who = user_name(call.decided_by) or call.get_decided_by_kind_display()
    # Said to the operator who asked, in their language.
    if call.status == CallStatus.DECIDING:
        return _("%(who)s is deciding this call") % {"who": who}
    if call.status in {CallStatus.ACCEPTED, CallStatus.REFUSED, CallStatus.FAILED}:
        return _("Already decided by %(who)s: %(outcome)s") % {
            "who": who,
            "outcome": call.get_status_display(),
        }
    if call.status == CallStatus.PENDING:
        return _("Too late: the PBX window is closing and it will route the call itself")
    return call.get_status_display()


def ask_pbx(call: Call, client: PbxClient | None = None) -> answers.PbxAnswer:
    """Step 2: send the claimed call's decision, bounded by the PBX's own window."""
    return answers.ask(call.channel_id, call.decision, call.deadline.timestamp(), client)


@stage("finish")
def finish(call: Call, answer: answers.PbxAnswer) -> DecideResult:
    """Step 3: record the PBX's answer to a claimed call."""
    now = timezone.now()
    changes = {
        "status": answer.status,
        "finished_at": now,
        "pbx_errcode": answer.errcode,
        "pbx_errmsg": answer.errmsg[:256],
        "pbx_round_trip_ms": answer.round_trip_ms,
    }
    errcode = answer.errcode
    response = {
        "kind": AuditKind.PBX_RESPONSE,
        "message": f"{errcode if errcode is not None else '-'} {answer.errmsg}".strip(),
        "at": now,
        "errcode": errcode,
        "errmsg": answer.errmsg,
        "round_trip_ms": answer.round_trip_ms,
    }
    with priority.urgent(), transaction.atomic():
        done = store.transition(call, changes, status=CallStatus.DECIDING)
        if done is None:
            # The sweeper gave up on this call while the PBX was answering; keep its verdict.
            current = store.load(call.pk)
            store.audit(current, **response)
            log.warning(
                "call %s finished after it was swept as %s", current.pbx_call_id, current.status
            )
            ok = answer.carried_out  # the PBX did carry it out; the record keeps the verdict
            return DecideResult(current, ok=ok, reason="" if ok else answer.message)
        store.record(
            store.event(done, **response),
            store.event(done, answer.status, answer.message, actor=done.decided_by, at=now),
        )
        # What the team did with this number, for the next call's card (same transaction).
        precedent.record_decision(done, now)
        if done.pbx_outcome:
            # The PBX's 30011 can overtake its answer to us: confirm it against the final record.
            # Our UPDATE above holds the row lock, so ``done`` is current.
            settle_outcome(done, None, now, source="decision")
        store.send_call_on_commit(done)
    if answer.status == CallStatus.FAILED:
        log.error("decision on call %s failed: %s", done.pbx_call_id, answer.message)
    ok = answer.carried_out
    return DecideResult(done, ok=ok, reason="" if ok else answer.message)


async def carry_out(call: Call, client: PbxClient | None = None) -> DecideResult:
    """Steps 2 and 3 for a claimed call: the request in the PBX pool, the record in the database
    pool, so database threads never wait on the network."""
    answer = await run_pbx(ask_pbx, call, client)
    return await run_blocking(finish, call, answer)
