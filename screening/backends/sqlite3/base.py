"""SQLite with a fair, in-process queue for write transactions (ENGINE for the embedded setup).

SQLite has one write lock per database. Stock Django waits for it in SQLite's busy handler, which
*sleeps* (1, 2, 5, 10 ... 100 ms) and retries: 20 operators deciding at once then wait hundreds of
milliseconds, in no particular order, while the lock sits free between sleeps. Here every
transaction (``BEGIN IMMEDIATE``, settings.py) first takes a FIFO lock shared by the threads of
this process, so waiters queue in arrival order and the next one starts the moment the previous
commits. A write outside a transaction (autocommit) queues the same way for its one statement.
Other processes on the same file still meet SQLite's own lock, as before. Transactions an operator
waits on (screening.dbpriority: storing an incoming call, a decision's claim and finish) queue
ahead of the rest.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

from screening import dbpriority


class FairLock:
    """A FIFO mutex: ownership is handed to the longest waiter on release, urgent waiters
    (screening.dbpriority) before the others."""

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
    """Autocommit writes take the fair lock for their one statement (inside a transaction the
    connection already holds it)."""

    fair_lock: FairLock
    lock_timeout: float

    def _needs_lock(self, query: str) -> bool:
        return not self.connection.in_transaction and query.lstrip()[:7].upper().startswith(_WRITES)

    def execute(self, query: str, params: Any = None) -> Any:
        if not self._needs_lock(query):
            return super().execute(query, params)
        if not self.fair_lock.acquire(self.lock_timeout, urgent=dbpriority.is_urgent()):
            raise OperationalError("database is locked (queued for the write lock)")
        try:
            return super().execute(query, params)
        finally:
            self.fair_lock.release()

    def executemany(self, query: str, param_list: Any) -> Any:
        if not self._needs_lock(query):
            return super().executemany(query, param_list)
        if not self.fair_lock.acquire(self.lock_timeout, urgent=dbpriority.is_urgent()):
            raise OperationalError("database is locked (queued for the write lock)")
        try:
            return super().executemany(query, param_list)
        finally:
            self.fair_lock.release()


class DatabaseWrapper(base.DatabaseWrapper):
    _holds_write_lock = False

    def create_cursor(self, name: str | None = None) -> Any:
        cursor = self.connection.cursor(factory=FairCursorWrapper)
        cursor.fair_lock = self._write_lock()
        cursor.lock_timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        return cursor

    def _write_lock(self) -> FairLock:
        return write_lock(str(self.settings_dict["NAME"]))

    def _start_transaction_under_autocommit(self) -> None:
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        if not self._write_lock().acquire(timeout, urgent=dbpriority.is_urgent()):
            raise OperationalError(f"database is locked (queued {timeout:g} s for the write lock)")
        self._holds_write_lock = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_write_lock()
            raise

    def _release_write_lock(self) -> None:
        if self._holds_write_lock:
            self._holds_write_lock = False
            self._write_lock().release()

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self._release_write_lock()

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self._release_write_lock()

    def _close(self) -> None:
        try:
            super()._close()
        finally:
            self._release_write_lock()
