"""SQLite with a fair, in-process queue for write transactions (speedup ``sqlite_queue``: the
ENGINE for the embedded setup while it is on; README.md in screening/speedups).

SQLite has one write lock per database. Stock Django waits for it in SQLite's busy handler, which
*sleeps* (1, 2, 5, 10 ... 100 ms) and retries: 20 operators deciding at once then wait hundreds of
milliseconds, in no particular order, while the lock sits free between sleeps. Here every
transaction (``BEGIN IMMEDIATE``, settings.py) first takes a FIFO lock shared by the threads of
this process, so waiters queue in arrival order and the next one starts the moment the previous
commits. A write outside a transaction (autocommit) queues the same way for its one statement.
Other processes on the same file still meet SQLite's own lock, as before.

Hooks used, all public: Django's documented way to subclass a built-in backend, its
``create_cursor``, ``commit``, ``rollback`` and ``close``; the lock for a transaction is taken
where Django's SQLite backend sends ``BEGIN`` through the cursor. Transactions an operator
waits on (``priority.urgent()``: storing an incoming call, a decision's claim and finish)
queue ahead of the rest.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

from screening.speedups import priority


class FairLock:
    """A FIFO mutex: ownership is handed to the longest waiter on release, urgent waiters
    (screening.speedups.priority) before the others."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._urgent: deque[threading.Lock] = deque()
        self._held = False

    def acquire(self, timeout: float, *, urgent: bool = False) -> bool:
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            waiter = threading.Lock()
            waiter.acquire()
            queue = self._urgent if urgent else self._waiters
            queue.append(waiter)
        if waiter.acquire(timeout=timeout):
            return True  # handed over by release(): we hold it now
        with self._mutex:
            try:
                queue.remove(waiter)
            except ValueError:
                return True  # handed over just as we gave up: we hold it after all
            return False

    def release(self) -> None:
        with self._mutex:
            queue = self._urgent or self._waiters
            if queue:
                queue.popleft().release()  # stays held, by the next waiter
            else:
                self._held = False

    @property
    def locked(self) -> bool:
        return self._held


_locks: dict[str, FairLock] = {}
_locks_guard = threading.Lock()


def write_lock(name: str) -> FairLock:
    with _locks_guard:
        return _locks.setdefault(name, FairLock())


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


class FairCursorWrapper(base.SQLiteCursorWrapper):
    """Takes the fair lock for a transaction at its ``BEGIN`` (Django's SQLite backend starts
    every transaction so, through a cursor), and for a write outside one for its one statement."""

    owner: DatabaseWrapper
    fair_lock: FairLock
    lock_timeout: float

    def _acquire(self) -> None:
        if not self.fair_lock.acquire(self.lock_timeout, urgent=priority.is_urgent()):
            raise OperationalError(
                f"database is locked (queued {self.lock_timeout:g} s for the write lock)"
            )

    def execute(self, query: str, params: Any = None) -> Any:
        head = query.lstrip()[:7].upper()
        if head.startswith("BEGIN") and not self.owner.holds_write_lock:
            self._acquire()
            self.owner.holds_write_lock = True
            try:
                return super().execute(query, params)
            except BaseException:
                self.owner.release_write_lock()
                raise
        if self.connection.in_transaction or not head.startswith(_WRITES):
            return super().execute(query, params)
        self._acquire()
        try:
            return super().execute(query, params)
        finally:
            self.fair_lock.release()

    def executemany(self, query: str, param_list: Any) -> Any:
        if self.connection.in_transaction or not query.lstrip()[:7].upper().startswith(_WRITES):
            return super().executemany(query, param_list)
        self._acquire()
        try:
            return super().executemany(query, param_list)
        finally:
            self.fair_lock.release()


class DatabaseWrapper(base.DatabaseWrapper):
    holds_write_lock = False

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=FairCursorWrapper)
        cursor.owner = self
        cursor.fair_lock = self._write_lock()
        cursor.lock_timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        return cursor

    def _write_lock(self) -> FairLock:
        return write_lock(str(self.settings_dict["NAME"]))

    def release_write_lock(self) -> None:
        if self.holds_write_lock:
            self.holds_write_lock = False
            self._write_lock().release()

    def _release_unless_in_transaction(self) -> None:
        # A commit refused before it reached SQLite (Django's own checks) leaves the
        # transaction, and so the lock, in place.
        if self.connection is None or not self.connection.in_transaction:
            self.release_write_lock()

    # A transaction ends in one of these three.
    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release_unless_in_transaction()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release_unless_in_transaction()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._release_unless_in_transaction()
