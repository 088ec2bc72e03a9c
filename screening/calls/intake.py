"""Intake: every PBX event enters here, whether it came by WebSocket or by webhook.

A 30016 becomes a stored call (``receive_call``), decided at once by a rule or a trunk policy or
pushed to the operators who may decide it, and its expiry timer is armed in this process. The
PBX's later reports (30011, 30012) go to ``screening.calls.outcomes``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from screening.calls import (
    decisions,
    lookups,
    outcomes,
    presence,
    pseudonyms,
    push,
    rules,
    store,
)
from screening.calls.access import stream_for_trunk
from screening.calls.context import card_context
from screening.calls.endings import schedule_expiry
from screening.calls.history import caller_history
from screening.calls.numbers import normalise_for_trunk
from screening.cpu_stages import stage
from screening.models import (
    AuditKind,
    Call,
    CallStatus,
    DecidedBy,
    Decision,
    FallbackPolicy,
    Rule,
    Trunk,
)
from screening.pbx import preopen
from screening.pbx.events import (
    CallDetailRecord,
    CallStateChanged,
    Event,
    IncomingCall,
    as_sent,
)
from screening.runtime import run_blocking, spawn
from screening.speedups import priority

log = logging.getLogger("screening.calls.intake")


async def handle_event(event: Event, *, via: str, received_at: datetime | None = None) -> None:
    """Record the event; for a new 30016, arm the expiry timer in this process.

    ``received_at`` is when the frame reached us: the PBX's 10 s started when it sent the event,
    so time spent queued here must count against the window, not extend it.
    """
    if event.clipped:
        _log_clipped(event)
    if isinstance(event, IncomingCall):
        received_at = received_at or timezone.now()
        received = await run_blocking(receive_call, event, via=via, received_at=received_at)
        call = received.call
        if received.auto_decision is not None:
            # A rule or a policy decided (and claimed) the call: send it without holding up intake.
            spawn(decisions.carry_out(call), f"auto-{call.pk}")
        elif received.created and call.status == CallStatus.PENDING:
            schedule_expiry(call)
            if preopen.enabled():
                # Every web process opens its connection to the PBX for the decision now, while
                # the operators read the card (screening/pbx/preopen.py).
                deadline = call.deadline.timestamp()
                push.send_to_groups([preopen.GROUP], preopen.message(call.channel_id, deadline))
        if received.look_up:
            # Stored and pushed already: a name found within the budget updates the card.
            spawn(lookups.identify(call), f"lookup-{call.pk}")
    elif isinstance(event, CallStateChanged):
        await run_blocking(outcomes.record_call_state, event)
    elif isinstance(event, CallDetailRecord):
        await run_blocking(outcomes.record_cdr, event)
    else:
        log.debug("ignoring PBX event %s", event.type)


@dataclass(frozen=True)
class Received:
    call: Call
    created: bool
    # (decision, by_kind) when a rule, the trunk policy or the fallback policy decided the call.
    # It is already claimed (DECIDING) in the same transaction that stored it, so no operator ever
    # sees it pending; ``handle_event`` sends it (decisions.carry_out), off the intake path, because
    # intake must never wait on the PBX.
    auto_decision: tuple[str, str] | None = None
    # Nobody local knows the caller and no lookup answered for the number lately: look it up
    # (screening.calls.lookups) once the card is out.
    look_up: bool = False


@stage("intake")
def receive_call(event: IncomingCall, *, via: str, received_at: datetime | None = None) -> Received:
    """Record a 30016. Idempotent on the PBX's call and channel ids (webhooks are retried).

    This is the store-before-push step every operator waits on, so it is kept short: everything
    that only reads (trunk, caller history, rules, presence) runs before the write transaction,
    which on SQLite holds the database's one write lock; the transaction is then one INSERT for
    the call, one for its audit rows and, for an automatic decision, the claim.
    """
    now = received_at or timezone.now()
    trunk, trunk_created = _trunk_for(event.trunk_name)
    history = caller_history(event.caller, now)
    caller_key = normalise_for_trunk(event.caller, trunk)
    context = card_context(caller_key, now)
    contact = context["contact"]
    # One cache read: a name an earlier lookup found goes out with the first push.
    look_up, looked_up = lookups.wanted(caller_key, has_name=contact is not None)
    if looked_up is not None:
        context["lookup"] = looked_up
    caller_name = contact["name"] if contact else (looked_up or {}).get("name", "")
    auto = _auto_decision(event.caller, trunk, now)
    try:
        with priority.urgent(), transaction.atomic():
            call = Call.objects.create(
                pbx_call_id=event.call_id,
                channel_id=event.channel_id,
                pbx_sn=event.sn,
                caller=event.caller,
                called=event.called,
                trunk=trunk,
                received_at=now,
                deadline=now + timedelta(seconds=settings.SCREEN_WINDOW_SECONDS),
                history=history,
                caller_key=caller_key,
                caller_name=caller_name,
                caller_token=pseudonyms.for_caller(event.caller, caller_key),
                context=context,
                suggestion=(context["suggestion"] or {}).get("decision", ""),
            )
            events = [
                store.event(
                    call,
                    AuditKind.RECEIVED,
                    f"Incoming call from {event.caller or 'withheld'} to {event.called} via {via}",
                    at=now,
                    via=via,
                    sn=event.sn,
                    channel_id=event.channel_id,
                    trunk_name=event.trunk_name,
                    member_status=event.member_status,
                    **as_sent(event),
                )
            ]
            if trunk_created:
                events.append(
                    store.event(
                        call, AuditKind.TRUNK_CREATED, f"Unknown trunk {trunk.name!r} created"
                    )
                )
            store.record(*events)
            decided = _claim_automatically(call, auto, now) if auto is not None else None
            if decided is None:
                store.send_call_on_commit(call, then=functools.partial(_pushed, call))
    except IntegrityError:
        # Already stored: a retried webhook, the same call by both transports, or another
        # process between. The unique constraint is the check, so a new call pays no query for it.
        existing = _existing_call(event)
        if existing is None:
            raise
        store.audit(existing, AuditKind.DUPLICATE, f"Duplicate 30016 via {via} ignored", via=via)
        return Received(existing, created=False)
    if call.suggestion:
        log.info("call %s: precedent suggests %s (shown only)", call.pbx_call_id, call.suggestion)
    if trunk_created:
        log.warning("call %s arrived on unknown trunk %r: created it", event.call_id, trunk.name)
    # Calls a rule or policy decided never reach a card: no lookup for them.
    return Received(call, created=True, auto_decision=decided, look_up=look_up and decided is None)


def _log_clipped(event: Event) -> None:
    """Say which fields the parser shortened to fit (the call's audit row keeps them as sent)."""
    fields = ", ".join(f"{path} ({len(sent)} characters)" for path, sent in event.clipped)
    audited = isinstance(event, IncomingCall | CallStateChanged | CallDetailRecord)
    where = " (as sent: in the call's audit trail)" if audited else ""
    log.warning(
        "PBX event %s for call %s: fields longer than we store, kept shortened: %s%s",
        type(event).__name__,
        getattr(event, "call_id", "-"),
        fields,
        where,
    )


def _trunk_for(name: str) -> tuple[Trunk, bool]:
    try:
        return Trunk.objects.get_or_create(
            name=name, defaults={"label": name, "auto_created": True}
        )
    except IntegrityError:  # created by another process between the get and the create
        return Trunk.objects.get(name=name), False


@dataclass(frozen=True)
class _Auto:
    decision: str
    by_kind: str
    rule: Rule | None = None
    note: str = ""


def _auto_decision(caller: str, trunk: Trunk, now: datetime) -> _Auto | None:
    """Whether a new call is decided without an operator, in this order: a matching rule, the
    trunk not screening, nobody online who may decide it (fallback policy). Reads only."""
    rule = rules.find_rule(caller, trunk, now)
    if rule is not None:
        return _Auto(rule.action, DecidedBy.RULE, rule, rule.describe())
    if not trunk.screening_enabled:
        return _Auto(Decision.ACCEPT, DecidedBy.TRUNK_POLICY)
    if trunk.fallback_policy != FallbackPolicy.WINDOW and not presence.any_online_for(trunk):
        decision = trunk.fallback_policy
        note = f"nobody online may decide calls on {trunk.name} (fallback: {decision})"
        return _Auto(decision, DecidedBy.FALLBACK, note=note)
    return None


def _claim_automatically(call: Call, auto: _Auto, now: datetime) -> tuple[str, str] | None:
    """Claim a call being stored for ``auto``, in the transaction that stores it, so no operator
    ever sees it pending."""
    detail: dict[str, Any] = {}
    if auto.rule is not None:
        detail = {"rule_id": auto.rule.pk, "rule_name": auto.note}
    # Not announced: no operator ever saw this call, so the first push it gets is its outcome
    # (it never shows among the waiting calls, even as "deciding").
    claimed = decisions.claim_as(
        call,
        auto.decision,
        None,
        auto.by_kind,
        rule=auto.rule,
        note=auto.note,
        announce=False,
        **detail,
    )
    if claimed is None:
        # Only when the event sat queued past the last useful moment: let operators see it.
        return None
    if auto.rule is not None:
        rules.record_hit(auto.rule, now)
    return auto.decision, auto.by_kind


def _existing_call(event: IncomingCall) -> Call | None:
    return Call.objects.filter(pbx_call_id=event.call_id, channel_id=event.channel_id).first()


def _pushed(call: Call, seq: int) -> None:
    stream = stream_for_trunk(call.trunk)
    store.audit(call, AuditKind.PUSHED, f"Pushed to {stream}", stream=stream, seq=seq)
