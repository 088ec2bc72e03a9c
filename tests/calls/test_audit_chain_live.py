"""The audit chain with two server processes writing at once: each has its own PBX (simulator)
and its own operators, both write to the one database (a SQLite file, or PostgreSQL in the
scale-out run), and every row they write lands in one unbroken chain, with no deadlock and no
lock timeout on the way."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from screening.calls import chain
from screening.models import AuditEvent, AuditKind, Call
from tests.conftest import Live, LiveFactory
from tests.support.calls import arrived
from tests.support.live import make_user, session_for, wait_for

pytestmark = pytest.mark.live

CALLS_EACH = 10
FINAL = ("accepted", "refused", "expired", "gone", "failed")


def test_rows_written_concurrently_by_two_server_processes_form_one_verified_chain(
    live_factory: LiveFactory,
) -> None:
    # The PBX's full 10 s hold: two servers and their PBXs share a loaded machine, and a
    # decision that arrives after a shorter test window would find the call gone.
    servers = [live_factory(window=10.0), live_factory(window=10.0)]
    trunks = ["peer-to-41", "register-bt"]  # one per PBX, so their channel ids never collide
    users = [make_user(f"op{i}", first_name=f"Op{i}") for i in range(2)]
    start = threading.Barrier(2)

    def drive(index: int) -> list[int]:
        live: Live = servers[index]
        http = session_for(live.server, users[index])
        start.wait()
        stored = []
        for n in range(CALLS_EACH):
            # Accept, refuse, leave to expire, or hang up in the hold: every kind of write.
            sent = live.sim.inject(f"0770090{index}{n:03d}", "02079460000", trunks[index])
            call = arrived(sent)
            if n % 4 in (0, 1):
                action = "accept" if n % 4 == 0 else "refuse"
                answer = http.post(f"{live.url}/calls/{call.pk}/{action}", timeout=10)
                assert answer.status_code == 200, answer.text
            elif n % 4 == 3:
                live.sim.hangup(sent["call_id"])
            stored.append(call.pk)
        return stored

    with ThreadPoolExecutor(2) as pool:
        stored = [pk for pks in pool.map(drive, range(2)) for pk in pks]

    assert len(stored) == 2 * CALLS_EACH
    wait_for(
        lambda: Call.objects.filter(pk__in=stored, status__in=FINAL).count() == len(stored),
        timeout=30,
        what="every call to end",
    )
    # Both processes wrote the rows of the calls they received and decided.
    assert AuditEvent.objects.filter(kind=AuditKind.RECEIVED).count() == len(stored)
    assert AuditEvent.objects.filter(kind=AuditKind.CLAIMED).count() >= CALLS_EACH
    for live in servers:  # no more writes from here on
        live.server.stop()
        log = live.server.log()
        for problem in ("deadlock", "database is locked", "Traceback", "IntegrityError"):
            assert problem not in log, log

    result = chain.verify()
    assert result.ok, result.describe()
    assert result.rows == AuditEvent.objects.count()
    assert result.unchained == 0
    positions: list[Any] = list(
        AuditEvent.objects.order_by("chain_seq").values_list("chain_seq", flat=True)
    )
    assert positions == list(range(1, len(positions) + 1))
