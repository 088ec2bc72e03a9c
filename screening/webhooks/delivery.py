"""The sender: delivers the outbox from every server process, in a thread of its own.

Each process (``manage.py serve``, ``pbx_listen``, ``demo``: ``screening.startup``) runs one
``Sender`` thread with its own database connection and a few HTTP threads of its own, so a slow or
hanging receiver only ever holds these: intake, pushes and decisions never wait on them. A loop
takes at most ``BATCH`` due rows and sends them ``WEBHOOK_CONCURRENCY`` (1) at a time, each request
bounded by ``WEBHOOK_CONNECT_TIMEOUT_SECONDS`` and ``WEBHOOK_READ_TIMEOUT_SECONDS``. New rows
wake the sender of the process that wrote them right after their commit; every sender also polls
every ``WEBHOOK_POLL_SECONDS`` (rows written by another process, retries coming due).

One row is sent by one process at a time: a sender takes due rows by setting their lease
(``locked_until``) in a short transaction committed before any request goes out: on PostgreSQL
``SELECT … FOR UPDATE SKIP LOCKED`` (concurrent senders skip each other's rows instead of
waiting), on SQLite one conditional UPDATE (SQLite has one writer at a time anyway). A
process that dies mid-request lets go when the lease ends. The result is written only while the
lease is still ours.

Events of one call reach each endpoint in order: a row is not taken while an earlier pending row of
the same call and endpoint exists (delivered and dead rows are final). A failed attempt (no 2xx
answer, or no answer) is retried after an exponential backoff with full jitter (a random delay
between 0 and ``WEBHOOK_RETRY_BASE_SECONDS`` x 2^(attempts - 1), at most
``WEBHOOK_RETRY_CAP_SECONDS``), until ``WEBHOOK_MAX_AGE_SECONDS`` (24 hours) after the event was
created; then the row is dead and an error is logged.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from screening import health, metrics
from screening.models import DeliveryState, WebhookAttempt, WebhookDelivery
from screening.webhooks import signing

log = logging.getLogger("screening.webhooks")

BATCH = 20
# Longer than any one request can take (connect + read timeouts, with room): a lease that ends
# while its request is still going would let a second process send the row.
LEASE = timedelta(seconds=120)
ERROR_CHARS = 300  # WebhookDelivery.last_error, WebhookAttempt.error

DELIVERED = "delivered"
RETRY = "retry"
DEAD = "dead"


@dataclass(frozen=True)
class Result:
    status: int | None
    latency_ms: int
    error: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _attempted(delivery: WebhookDelivery, result: str) -> None:
    """Every attempt's outcome (``delivered``, ``retry`` or ``dead``) passes here once: the one
    place to count webhook deliveries by result (metrics)."""
    log.debug("webhook %s %s: %s", delivery.type, delivery.event_id, result)
    metrics.webhook_attempted("failed" if result == "retry" else result)


def backoff(attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones (full jitter)."""
    ceiling = min(
        settings.WEBHOOK_RETRY_CAP_SECONDS,
        settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** min(attempts - 1, 30),
    )
    return random.uniform(0, ceiling)  # noqa: S311 (jitter, not a secret)


def _due(now: datetime) -> QuerySet[WebhookDelivery]:
    earlier = WebhookDelivery.objects.filter(
        endpoint=OuterRef("endpoint"),
        call=OuterRef("call"),  # NULL for events about no call: never equal, so never held back
        state=DeliveryState.PENDING,
        pk__lt=OuterRef("pk"),
    )
    return (
        WebhookDelivery.objects.filter(
            state=DeliveryState.PENDING, next_attempt_at__lte=now, endpoint__active=True
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .exclude(Exists(earlier))
    )


def claim(
    limit: int = BATCH, now: datetime | None = None
) -> tuple[list[WebhookDelivery], datetime]:
    """Take up to ``limit`` due rows for this process (committed before returning); returns them
    with the lease value, which is also this claim's token."""
    now = now or timezone.now()
    until = now + LEASE
    if connection.vendor == "postgresql":
        with transaction.atomic():
            rows = list(
                _due(now)
                .select_for_update(skip_locked=True, of=("self",))
                .select_related("endpoint")
                .order_by("pk")[:limit]
            )
            if rows:
                WebhookDelivery.objects.filter(pk__in=[r.pk for r in rows]).update(
                    locked_until=until
                )
        return rows, until
    # SQLite has one writer at a time: one conditional UPDATE takes whichever of the candidates
    # are still free, and the lease value then says which ones this process got.
    candidates = list(_due(now).order_by("pk").values_list("pk", flat=True)[:limit])
    if not candidates:
        return [], until
    WebhookDelivery.objects.filter(
        pk__in=candidates, state=DeliveryState.PENDING, next_attempt_at__lte=now
    ).filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now)).update(locked_until=until)
    taken = WebhookDelivery.objects.filter(pk__in=candidates, locked_until=until)
    return list(taken.select_related("endpoint").order_by("pk")), until


def post(session: requests.Session, row: WebhookDelivery) -> Result:
    """One signed request; never raises."""
    body = row.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "pbxscreen-webhooks",
        signing.HEADER: signing.header(row.endpoint.secret, body),
        "X-Pbxscreen-Event": row.type,
        "X-Pbxscreen-Event-Id": str(row.event_id),
    }
    timeout = (settings.WEBHOOK_CONNECT_TIMEOUT_SECONDS, settings.WEBHOOK_READ_TIMEOUT_SECONDS)
    started = time.monotonic()
    try:
        # stream: the answer's body is never read, only its status.
        with session.post(
            row.endpoint.url,
            data=body,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        ) as response:
            status = response.status_code
        error = "" if 200 <= status < 300 else f"HTTP {status}"
    except Exception as exc:  # any failure of the request is an attempt that failed
        status, error = None, f"{type(exc).__name__}: {exc}"
    latency = round((time.monotonic() - started) * 1000)
    return Result(status, latency, error[:ERROR_CHARS])


def _plan(row: WebhookDelivery, result: Result, now: datetime) -> tuple[str, dict[str, object]]:
    """What an attempt's result makes of its row: delivered, due again later, or dead."""
    changes: dict[str, object] = {
        "attempts": F("attempts") + 1,
        "locked_until": None,
        "last_status": result.status,
        "last_latency_ms": result.latency_ms,
        "last_error": result.error,
    }
    give_up_at = row.created_at + timedelta(seconds=settings.WEBHOOK_MAX_AGE_SECONDS)
    if result.ok:
        changes.update(state=DeliveryState.DELIVERED, delivered_at=now)
        return DELIVERED, changes
    if now >= give_up_at:
        changes.update(state=DeliveryState.DEAD)
        return DEAD, changes
    # The last try lands on the time limit rather than past it.
    changes["next_attempt_at"] = min(now + timedelta(seconds=backoff(row.attempts + 1)), give_up_at)
    return RETRY, changes


def record(
    row: WebhookDelivery, lease: datetime, result: Result, now: datetime | None = None
) -> str:
    """Write an attempt's result; returns ``delivered``, ``retry`` or ``dead``."""
    return record_many([(row, result)], lease, now)[0]


def record_many(
    results: list[tuple[WebhookDelivery, Result]], lease: datetime, now: datetime | None = None
) -> list[str]:
    """Write the results of attempts that ended together in one transaction (on SQLite each
    write transaction queues for the one write lock). A row is changed only while the lease is
    still ours; the attempt is recorded either way."""
    now = now or timezone.now()
    planned = [(row, result, *_plan(row, result, now)) for row, result in results]
    with transaction.atomic():
        ours = {
            row.pk: WebhookDelivery.objects.filter(pk=row.pk, locked_until=lease).update(**changes)
            for row, _result, _outcome, changes in planned
        }
        WebhookAttempt.objects.bulk_create(
            WebhookAttempt(
                delivery_id=row.pk,
                at=now,
                status_code=result.status,
                latency_ms=result.latency_ms,
                error=result.error,
            )
            for row, result, _outcome, _changes in planned
        )
    outcomes = []
    for row, result, outcome, _changes in planned:
        if not ours[row.pk]:
            log.warning("webhook %s: lease ended before the answer; kept as an attempt", row.pk)
        elif outcome == DEAD:
            log.error(
                "webhook %s %s to %s is dead after %d attempts (last: %s)",
                row.type,
                row.event_id,
                row.endpoint.url,
                row.attempts + 1,
                result.error or result.status,
            )
        _attempted(row, outcome)
        outcomes.append(outcome)
    return outcomes


class Sender:
    """One delivery loop. ``run_once`` is one claim and its requests (tests drive it directly);
    ``start`` runs it in a daemon thread until ``stop``.

    By default (``WEBHOOK_CONCURRENCY`` 1) this thread sends the rows of a claim one after
    another: every extra runnable thread in a process makes its intake wait longer for the GIL
    (measured on the scale-out listener at 10 calls/s: four HTTP threads took intake's p99 from
    ~100 ms to ~500-750 ms; one thread left it at ~100 ms). With more, the requests go out that
    many at a time from HTTP-only threads (a session each) while this thread alone touches the
    database, recording each result as it comes; one claim never holds two rows of one call for
    one endpoint (see ``_due``), so sending them side by side keeps each call's order."""

    def __init__(self, *, batch: int = BATCH, poll: float | None = None, name: str = "") -> None:
        self.batch = batch
        self.poll = poll
        self.name = name or "pbxscreen-webhooks"
        self._sessions = threading.local()
        concurrency = settings.WEBHOOK_CONCURRENCY
        self._pool = (
            ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"{self.name}-http")
            if concurrency > 1
            else None
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _post(self, row: WebhookDelivery) -> Result:
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = requests.Session()
        return post(session, row)

    def run_once(self) -> int:
        rows, lease = claim(self.batch)
        if not rows:
            return 0
        if self._pool is None:
            for row in rows:
                if self._stop.is_set():
                    break  # the lease lets the rest go
                record_many([(row, self._post(row))], lease)
            return len(rows)
        sending = {self._pool.submit(self._post, row): row for row in rows}
        waiting = set(sending)
        while waiting:
            # Results that came in together are written together.
            done, waiting = wait(waiting, return_when=FIRST_COMPLETED)
            record_many([(sending[f], f.result()) for f in done], lease)
        return len(rows)

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        from screening.webhooks.outbox import active_endpoints  # outbox imports this module

        problem = ""  # logged once while it lasts, not once a poll
        try:
            while not self._stop.is_set():
                self._wake.clear()
                sent = 0
                try:
                    close_old_connections()  # a connection the database closed meanwhile
                    # Only active endpoints' rows are ever due (``_due``): with none, the poll
                    # costs no claim query, only this process's short endpoint cache.
                    sent = self.run_once() if active_endpoints() else 0
                    problem = ""
                except health.UNAVAILABLE as exc:
                    if health.describe(exc) != problem:
                        problem = health.describe(exc)
                        log.warning("webhook delivery paused, database unavailable: %s", problem)
                except Exception as exc:
                    if repr(exc) != problem:
                        problem = repr(exc)
                        log.exception("webhook delivery loop failed")
                if not sent:
                    self._wake.wait(self.poll or settings.WEBHOOK_POLL_SECONDS)
        finally:
            connection.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)


_sender: Sender | None = None
_start_lock = threading.Lock()


def start() -> Sender | None:
    """This process's sender, started once (``screening.startup``); None when turned off."""
    global _sender
    if not settings.WEBHOOK_DELIVERY:
        return None
    with _start_lock:
        if _sender is None:
            _sender = Sender().start()
    return _sender


def stop() -> None:
    """Stop this process's sender (tests that drive senders of their own)."""
    global _sender
    with _start_lock:
        if _sender is not None:
            _sender.stop()
            _sender = None


def wake() -> None:
    """New rows committed: deliver now rather than at the next poll (no-op without a sender)."""
    if _sender is not None:
        _sender.wake()
