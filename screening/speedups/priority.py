"""Which write transactions go first when they queue for SQLite's one write lock.

Operators wait on a few writes: storing an incoming call before its push, and a decision's
claim and finish. The rest (the PBX's 30011/30012 confirmations, expiry, audit notes,
housekeeping) can wait a few milliseconds more. Under load the PBX sends four or five
confirmations per call; queued first-come first-served, an incoming call waited behind them.
The SQLite write queue (``backends/sqlite3``) serves urgent waiters first; on PostgreSQL (row
locks, no global write lock), or with the queue off, this is a no-op.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_local = threading.local()


@contextmanager
def urgent() -> Iterator[None]:
    """Write transactions begun in this block, in this thread, jump the queue."""
    previous = getattr(_local, "urgent", False)
    _local.urgent = True
    try:
        yield
    finally:
        _local.urgent = previous


def is_urgent() -> bool:
    return bool(getattr(_local, "urgent", False))
