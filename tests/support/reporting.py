"""A small, hand-built call history for the reporting tests (every number is known)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from screening.models import AuditEvent, AuditKind, Call, CallStatus, DecidedBy, Trunk
from tests.support.live import make_user

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
WINDOW = timedelta(seconds=10)
_ids = count(1)


def make_call(
    trunk: Trunk,
    received_at: datetime,
    status: str = CallStatus.ACCEPTED,
    *,
    caller: str = "+442079460001",
    called: str = "+442079461000",
    user: AbstractBaseUser | None = None,
    kind: str | None = None,
    decision_ms: float | None = None,
    audit: bool = False,
    **extra: Any,
) -> Call:
    """A finished call as actions would leave it; ``decision_ms`` sets claimed_at."""
    n = next(_ids)
    if kind is None:
        kind = {
            CallStatus.EXPIRED: DecidedBy.PBX_TIMEOUT,
            CallStatus.GONE: DecidedBy.CALLER,
            CallStatus.PENDING: "",
        }.get(status, DecidedBy.OPERATOR)
    claimed = received_at + timedelta(milliseconds=decision_ms) if decision_ms is not None else None
    call = Call.objects.create(
        pbx_call_id=f"1700000000.{n}",
        channel_id=f"PJSIP/test-{n}",
        caller=caller,
        called=called,
        trunk=trunk,
        received_at=received_at,
        deadline=received_at + WINDOW,
        status=status,
        decided_by_kind=kind,
        decided_by=user,
        decision="accept" if status == CallStatus.ACCEPTED else "",
        claimed_at=claimed,
        finished_at=(claimed or received_at + WINDOW) if status != CallStatus.PENDING else None,
        **extra,
    )
    if audit:
        AuditEvent.objects.create(
            call=call, kind=AuditKind.RECEIVED, at=received_at, message="Incoming call"
        )
    return call


@dataclass
class History:
    main: Trunk
    sales: Trunk
    alice: AbstractBaseUser
    bob: AbstractBaseUser
    calls: list[Call]


def build_history() -> History:
    """Ten calls on two trunks over two days, two operators, every kind of outcome."""
    main = Trunk.objects.create(name="peer-main", label="Main line")
    sales = Trunk.objects.create(name="peer-sales", label="Sales")
    alice = make_user("alice", first_name="Alice", last_name="Able")
    bob = make_user("bob", first_name="Bob", last_name="Baker")
    h = timedelta(hours=1)
    calls = [
        # day 1, 09:xx
        make_call(main, T0, caller="+442079460001", user=alice, decision_ms=1000),
        make_call(main, T0 + timedelta(minutes=10), CallStatus.REFUSED, caller="+442079460002",
                  user=alice, decision_ms=2000),
        make_call(sales, T0 + timedelta(minutes=20), CallStatus.EXPIRED, caller="07700900001"),
        # day 1, 10:xx
        make_call(main, T0 + h, caller="07700900002", user=bob, decision_ms=3000),
        make_call(main, T0 + h + timedelta(minutes=5), CallStatus.FAILED, caller="+442079460001",
                  user=bob, decision_ms=4000, pbx_errcode=60002,
                  pbx_errmsg="MAX LIMITATION EXCEEDED"),
        make_call(sales, T0 + h + timedelta(minutes=6), CallStatus.GONE, caller="anonymous"),
        make_call(sales, T0 + h + timedelta(minutes=7), kind=DecidedBy.RULE, decision_ms=3,
                  caller="=cmd|' /C calc'!A0"),
        # day 2, 09:xx
        make_call(main, T0 + 24 * h, CallStatus.REFUSED, caller="+442079460002", user=alice,
                  decision_ms=10000 - 600, pbx_outcome="answered", outcome_mismatch=True),
        make_call(main, T0 + 24 * h + timedelta(minutes=1), CallStatus.EXPIRED,
                  caller="07700900003"),
        make_call(sales, T0 + 24 * h + timedelta(minutes=2), kind=DecidedBy.TRUNK_POLICY,
                  decision_ms=2, caller="@SUM(1+1)"),
    ]  # fmt: skip
    return History(main, sales, alice, bob, calls)
