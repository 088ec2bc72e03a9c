"""Writing the outbox: one ``WebhookDelivery`` row per event per subscribed endpoint, inside the
transaction of the state change the event reports, so an event exists if and only if its change
committed.

Call events come from the audit rows every state change records (``on_audit``, registered with
``screening.calls.store.observe``); the PBX's confirmation of an outcome from
``screening.calls.outcomes`` (``outcome_settled``); link changes from ``screening.pbx.link``
(``link_changed``), in a transaction of their own since the link state lives in the cache.

Intake and decisions must not pay for webhooks nobody configured: the active endpoints are cached
per process for ``WEBHOOK_ENDPOINT_CACHE_SECONDS`` (a few seconds). Saving or deleting an endpoint
forgets the cache at once in the process that did it; other processes see the change within that
delay (an event in between goes to the endpoints active before it). The rows are inserted with
``INSERT … SELECT`` from the endpoint table, so an endpoint deleted meanwhile gets no row (an
insert naming a deleted endpoint would fail the state change's commit).

The rows are written after the audit rows, so while the audit chain's head is held
(screening.calls.chain's lock order): that is safe because they are new rows, and the only rows
they lock (for their foreign keys, at commit) are the call, which the transaction has locked
already, and the endpoint, which nobody locks while waiting for the head.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from screening.models import AuditEvent, Call, DeliveryState, WebhookDelivery, WebhookEndpoint
from screening.webhooks import delivery, events

log = logging.getLogger("screening.webhooks")

Endpoints = tuple[tuple[int, frozenset[str]], ...]  # (pk, subscribed types; empty: all)

_lock = threading.Lock()
_cached: tuple[float, Endpoints] | None = None  # (monotonic expiry, endpoints)


def active_endpoints() -> Endpoints:
    """The active endpoints and their event types, from this process's short cache."""
    global _cached
    cached = _cached
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    rows = WebhookEndpoint.objects.filter(active=True).values_list("pk", "events")
    found = tuple(
        (pk, frozenset(e for e in (types or []) if isinstance(e, str))) for pk, types in rows
    )
    with _lock:
        _cached = (time.monotonic() + settings.WEBHOOK_ENDPOINT_CACHE_SECONDS, found)
    return found


def forget_endpoints(**_: Any) -> None:
    """Saving or deleting an endpoint takes effect at once in this process (signal receiver)."""
    global _cached
    with _lock:
        _cached = None


def subscribers(type_: str, endpoints: Endpoints) -> list[int]:
    return [pk for pk, types in endpoints if not types or type_ in types]


def enqueue(
    type_: str,
    data: dict[str, Any],
    *,
    call_id: int | None,
    created: datetime,
    endpoints: Endpoints | None = None,
) -> uuid.UUID | None:
    """Write one event for every active endpoint subscribed to ``type_``, in the current
    transaction, and wake this process's sender once it commits. Returns the event id, or None
    when nobody subscribes."""
    ids = subscribers(type_, active_endpoints() if endpoints is None else endpoints)
    if not ids:
        return None
    event_id = uuid.uuid4()
    text = events.body(event_id, type_, created, data)
    _insert(ids, event_id, type_, text, call_id, created)
    transaction.on_commit(delivery.wake)
    return event_id


def _insert(
    endpoint_ids: list[int],
    event_id: uuid.UUID,
    type_: str,
    body: str,
    call_id: int | None,
    created: datetime,
) -> None:
    """One ``INSERT … SELECT`` for all endpoints: only those still there and active get a row."""
    meta, target = WebhookDelivery._meta, WebhookEndpoint._meta
    qn = connection.ops.quote_name

    def prep(name: str, value: Any) -> Any:
        return meta.get_field(name).get_db_prep_value(value, connection)

    columns = [
        "endpoint_id",
        "event_id",
        "type",
        "body",
        "call_id",
        "created_at",
        "state",
        "attempts",
        "next_attempt_at",
        "last_error",
    ]
    values = [
        prep("event_id", event_id),
        type_,
        body,
        call_id,
        prep("created_at", created),
        DeliveryState.PENDING.value,
        0,
        prep("next_attempt_at", created),
        "",
    ]
    placeholders = ", ".join(["%s"] * len(endpoint_ids))
    # Only quoted names from the models' metadata are formatted in; every value is a parameter.
    sql = (
        f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(c) for c in columns)}) "  # noqa: S608
        f"SELECT {qn(target.pk.column)}, {', '.join(['%s'] * len(values))} "
        f"FROM {qn(target.db_table)} "
        f"WHERE {qn('active')} = %s AND {qn(target.pk.column)} IN ({placeholders}) "
        f"ORDER BY {qn(target.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, True, *endpoint_ids])


def on_audit(rows: Any) -> None:
    """``store.observe`` hook: the call events these audit rows make (same transaction)."""
    endpoints = active_endpoints()
    if not endpoints:
        return
    for row in rows:
        row: AuditEvent
        type_ = events.KIND_TO_TYPE.get(row.kind)
        if type_ is None or row.call_id is None:
            continue
        call = row.call
        enqueue(type_, events.call_data(call), call_id=call.pk, created=row.at, endpoints=endpoints)


def outcome_settled(call: Call, now: datetime) -> None:
    """The PBX's report changed what is known of ``call``'s outcome (its row locked by the
    caller's transaction): ``call.outcome_confirmed``."""
    endpoints = active_endpoints()
    if endpoints:
        enqueue(
            events.CALL_OUTCOME_CONFIRMED,
            events.call_data(call),
            call_id=call.pk,
            created=now,
            endpoints=endpoints,
        )


def link_changed(value: dict[str, Any], previous: str | None) -> None:
    """The PBX link changed state (``value``: ``link.describe``'s form). The link state lives in
    the cache, so the event gets a transaction of its own; a database that cannot take it costs
    the event (logged), never the link."""
    try:
        endpoints = active_endpoints()
        if not endpoints:
            return
        with transaction.atomic():
            enqueue(
                events.PBX_LINK_CHANGED,
                events.link_data(value, previous),
                call_id=None,
                created=timezone.now(),
                endpoints=endpoints,
            )
    except Exception as exc:
        log.error("pbx_link.changed (%s) not queued for webhooks: %s", value.get("state"), exc)


def connect() -> None:
    """Called once at start-up (``ScreeningConfig.ready``)."""
    from django.db.models.signals import post_delete, post_save

    from screening.calls import store

    store.observe(on_audit)
    post_save.connect(forget_endpoints, sender=WebhookEndpoint, dispatch_uid="webhooks-endpoints")
    post_delete.connect(forget_endpoints, sender=WebhookEndpoint, dispatch_uid="webhooks-gone")
