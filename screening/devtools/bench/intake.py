"""What the audit chain costs intake (``manage.py bench --suite --parts intake``).

In process, no server: ``receive_call`` (the 30016's store-before-push transaction: the call, its
audit rows, and with them the chain's head) for ``--intake-calls`` new calls with the chain, and as
many with linking bypassed (the rows inserted as they were before the chain), alternating in
blocks so both see the same database size, caches and machine load. Bench-only: the product has no
way to write an audit row outside the chain.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from screening.calls import chain, intake
from screening.devtools.bench.stats import summarize
from screening.models import AuditEvent
from screening.pbx.events import IncomingCall

BLOCK = 50  # calls per block; the two ways alternate block by block
WARMUP = 50


@contextmanager
def _unlinked() -> Iterator[None]:
    linked = chain.append

    def insert(rows: Sequence[AuditEvent]) -> None:
        AuditEvent.objects.bulk_create(rows)

    chain.append = insert  # type: ignore[assignment]
    try:
        yield
    finally:
        chain.append = linked  # type: ignore[assignment]


def _event(n: int) -> IncomingCall:
    return IncomingCall(
        call_id=f"bench-intake.{n}",
        channel_id=f"PJSIP/bench-intake-{n}",
        caller=f"07700{n % 400_000:06d}",
        called="02079460000",
        trunk_name="peer-to-41",
        sn="BENCH",
        member_status="ALERT",
    )


def measure_intake(calls: int) -> dict[str, Any]:
    """ms per ``receive_call``, with the chain and without, ``calls`` of each."""
    serial = 0

    def one() -> float:
        nonlocal serial
        serial += 1
        started = time.perf_counter_ns()
        intake.receive_call(_event(serial), via="bench")
        return (time.perf_counter_ns() - started) / 1e6

    for _ in range(WARMUP):  # connection, statement caches, the trunk row
        one()
    samples: dict[str, list[float]] = {"chain": [], "no_chain": []}
    while len(samples["chain"]) < calls:
        size = min(BLOCK, calls - len(samples["chain"]))
        samples["chain"] += [one() for _ in range(size)]
        with _unlinked():
            samples["no_chain"] += [one() for _ in range(size)]
    verified = chain.verify(previous="")  # the chained rows only (see below)
    with_chain, without = summarize(samples["chain"]), summarize(samples["no_chain"])
    return {
        "calls": calls,
        "chain_ms": with_chain,
        "no_chain_ms": without,
        "added_ms_mean": round(with_chain["mean"] - without["mean"], 3),
        "added_ms_p50": round(with_chain["p50"] - without["p50"], 3),
        # The bypassed rows are outside the chain by design: a walk stops at the first of them.
        "chain_rows_written": AuditEvent.objects.filter(chain_seq__isnull=False).count(),
        "verify": verified.describe(),
    }
