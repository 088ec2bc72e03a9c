"""CSV export of exactly the audit list's filter and order, streamed in constant memory.

- UTF-8 with a byte-order mark, so Excel opens names with accents correctly (Python reads it
  with ``encoding="utf-8-sig"``; most other tools skip it).
- Spreadsheet formula injection: a text cell that starts with ``=``, ``+``, ``-``, ``@``, tab or
  carriage return gets a leading ``'``, so Excel and LibreOffice show it as text instead of
  running it (OWASP "CSV injection"). Caller numbers such as ``+4420…`` therefore read
  ``'+4420…`` in the file. Numbers we write ourselves (ids, milliseconds, errcodes) are left as
  numbers.
- Under ASGI, Django turns a synchronous iterator into a list before sending it, so there the
  rows are produced in a worker thread with its own database connection and handed over through
  a small bounded queue (back-pressure: a slow download pauses the query instead of buffering).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import QuerySet
from django.utils import timezone, translation

from screening.models import Call
from screening.reports.audit import AuditRow, Ordering, iter_rows

BOM = "\ufeff"
CHUNK_ROWS = 2000  # rows per database fetch and per chunk sent
QUEUE_CHUNKS = 4  # chunks buffered between the producer thread and the response
DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

HEADER = (
    "call",
    "received_at",
    "caller",
    "called",
    "trunk",
    "outcome",
    "decided_by_kind",
    "decided_by",
    "decision_ms",
    "window_ms",
    "pbx_errcode",
    "pbx_errmsg",
    "pbx_outcome",
    "mismatch",
    "caller_name",
    "reason",
    "note",  # the refusal reason's note
)


def neutralise(value: Any) -> Any:
    """Make a text cell safe to open in a spreadsheet."""
    if isinstance(value, str) and value.startswith(DANGEROUS_PREFIXES):
        return "'" + value
    return value


def csv_cells(row: AuditRow) -> list[Any]:
    """The list's columns, split into machine-friendly parts (kind and name, errcode and errmsg)."""
    cells = [
        row.pk,
        timezone.localtime(row.received_at).isoformat(timespec="milliseconds"),
        row.caller,
        row.called,
        row.trunk,
        row.status,
        row.decided_by_kind,
        row.decided_by,
        row.decision_ms,
        row.window_ms,
        row.pbx_errcode,
        row.pbx_errmsg,
        row.pbx_outcome,
        "yes" if row.outcome_mismatch else "no",
        row.caller_name,
        row.reason,
        row.reason_note,
    ]
    return [neutralise(c) for c in cells]


def iter_csv(qs: QuerySet[Call], ordering: Ordering) -> Iterator[bytes]:
    """The whole file as byte chunks; memory stays bounded by one database chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write(BOM)
    writer.writerow(HEADER)
    # On PostgreSQL a transaction lets .iterator() use a plain server-side cursor (outside one,
    # Django declares it WITH HOLD and PostgreSQL materialises the whole result first). SQLite
    # streams without one, and a transaction there would take the write lock.
    atomic = transaction.atomic() if connection.vendor == "postgresql" else contextlib.nullcontext()
    # A file for other programs: the same words (who decided) whatever the reader's language.
    with atomic, translation.override(settings.LANGUAGE_CODE):
        for count, row in enumerate(iter_rows(qs, ordering, CHUNK_ROWS), 1):
            writer.writerow(csv_cells(row))
            if count % CHUNK_ROWS == 0:
                yield _drain(buffer)
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    return data


_DONE = object()


class _Producer(threading.Thread):
    """Runs a synchronous chunk generator in its own thread (and database connection)."""

    def __init__(self, make_chunks: Callable[[], Iterator[bytes]]) -> None:
        super().__init__(name="csv-export", daemon=True)
        self.make_chunks = make_chunks
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            for chunk in self.make_chunks():
                if not self._put(chunk):
                    return
            self._put(_DONE)
        except BaseException as exc:
            self._put(exc)
        finally:
            connections.close_all()  # this thread's connections only

    def _put(self, item: Any) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False


async def aiter_csv(make_chunks: Callable[[], Iterator[bytes]]) -> AsyncIterator[bytes]:
    producer = _Producer(make_chunks)
    producer.start()
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                item = await loop.run_in_executor(None, _get, producer.queue)
            except queue.Empty:
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # The client went away (or we finished): let the producer stop at its next chunk.
        producer.stopped.set()


def _get(q: queue.Queue[Any]) -> Any:
    return q.get(timeout=1.0)
