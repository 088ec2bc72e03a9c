"""Calls the PBX offered while the event link was down: outage windows and their reconciliation.

While the listener is not subscribed the PBX still offers calls; nobody is asked, so after its
window it routes each of them itself, and the 30016 is lost (events are not replayed). Each such
time is a ``LinkOutage`` window:

- the listener opens one when the link goes from up to not up (``link_lost``), and when it starts
  (``listener_started``): then the window begins at the last moment the product is known to have
  been hearing the PBX (the newest call or PBX report stored, or the end of the newest closed
  window), at most ``OUTAGE_LOOKBACK_HOURS`` back, or now when nothing is known (a first start);
- the window closes when the link is up (subscribed) again (``link_back``), and is reconciled:
  the PBX's call records (``cdr/search``) of the window, widened by ``SEARCH_SLACK`` on both sides
  (the link may have been dead for a heartbeat timeout before we noticed, and the PBX's clock may
  differ from ours), are read, and every inbound call on a screened trunk that no ``Call`` holds
  becomes a call with status *unscreened* and one audit row saying what the PBX did with it;
- a call still going on when the window is reconciled has no record yet: its 30012 arrives on the
  restored link for a call we never saw, and ``record_orphan_cdr`` records it the same way when
  its start lies in a window;
- a reconciliation that fails (PBX unreachable, an errcode) leaves the window unreconciled with
  the error; the sweeper retries such windows (``retry_scheduler``), never holding up intake.

A call is recorded unscreened at most once, however often windows are reconciled and by how many
processes at once: a call the product saw (any ``Call`` with the PBX's call id) is skipped, and
an unscreened call is stored with a fixed channel placeholder, so the unique (call id, channel id)
constraint refuses a second copy that a concurrent run tries to insert.

What is unconfirmed about ``cdr/search`` (docs/outages.md): the names of the record's fields (read
here under every plausible name, see ``FIELDS``), whether ``start_time``/``end_time`` select by the
call's start (assumed), and in which time zone ``time``/``time_start`` are written: a PBX-local date
and time is read in the product's ``TIME_ZONE`` (the PBX and the product are assumed to be set to
the same zone); Unix seconds are taken as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from screening import periodic, runtime
from screening.calls import pseudonyms, store
from screening.calls.numbers import normalise_for_trunk
from screening.models import AuditEvent, AuditKind, Call, CallStatus, LinkOutage, PbxOutcome, Trunk
from screening.pbx import events as wire
from screening.pbx.client import PbxClient, PbxError, PbxNotConfigured, PbxTransportError, printable

log = logging.getLogger("screening.calls.reconcile")

# The CDR carries no channel id: every unscreened call is stored with this one, so (call id,
# placeholder) is unique and a second copy of the same call cannot be inserted.
CHANNEL_PLACEHOLDER = "(not offered: link down)"
# The window searched is wider than the outage by this on each side (see the module docstring).
SEARCH_SLACK = timedelta(seconds=60)
# Audit rows written from what the PBX sent: the newest one is the last moment we heard it.
HEARD_KINDS = (AuditKind.RECEIVED, AuditKind.DUPLICATE, AuditKind.PBX_STATE, AuditKind.PBX_CDR)
# The sweeper retries unreconciled windows this often, one process at a time.
RETRY_SECONDS = 60.0
MAX_ERROR_CHARS = 512

# A record's fields under every name the PBX may use: the 30012 names (documented for the event)
# first, then the names ``cdr/list`` sorts by (which suggest the search's fields; unconfirmed).
FIELDS: dict[str, tuple[str, ...]] = {
    "call_id": ("call_id", "uid"),  # uid: a CDR id, never a 30016 call id (so never matched)
    "time": ("time_start", "time", "start_time"),
    "from": ("call_from", "src"),
    "to": ("call_to", "dst"),
    "trunk": ("src_trunk_name", "src_trunk"),
    "status": ("status", "disposition"),
    "type": ("type", "call_type"),
    "duration": ("call_duration", "duration"),
    "talk": ("talk_duration",),
    "did": ("did_number", "did"),
}
# PBX-local date-times as the doc's examples write them; anything else is tried as ISO 8601.
TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S")


def lookback() -> timedelta:
    return timedelta(hours=settings.OUTAGE_LOOKBACK_HOURS)


# --- reading a call record ----------------------------------------------------------------------


@dataclass(frozen=True)
class CdrRecord:
    """One PBX call record, read tolerantly (strings trimmed: the PBX sends blanks as " ")."""

    call_id: str
    started: datetime | None  # None: the time was missing or in a form we cannot read
    time_sent: str
    caller: str
    called: str
    trunk_name: str
    status: str  # upper case, as the PBX wrote it (ANSWERED, NO ANSWER, BUSY, VOICEMAIL, …)
    call_type: str  # lower case (the doc writes both "inbound" and "Inbound"); "" when absent
    duration: int | None
    talk: int | None
    raw: dict[str, Any]

    @property
    def inbound(self) -> bool:
        """Inbound, or of no stated type (then it is taken as inbound: only records on a screened
        trunk's inbound side are kept, and those are inbound calls)."""
        return self.call_type in {"", "inbound"}


def _first(item: Mapping[str, Any], names: Iterable[str]) -> Any:
    for name in names:
        value = item.get(name)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


def _text(item: Mapping[str, Any], key: str, limit: int) -> str:
    value = _first(item, FIELDS[key])
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)  # numbers for numbers: accepted, as in the events
    return printable(value, limit)


def _seconds(item: Mapping[str, Any], key: str) -> int | None:
    value = _first(item, FIELDS[key])
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= wire.MAX_INT:
        return value
    return None


def pbx_time(value: Any) -> datetime | None:
    """A record's start as an aware datetime: Unix seconds, or a PBX-local date-time read in the
    product's time zone (assumed to be the PBX's), or ISO 8601 with its own offset."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC) if 0 < value < 2**34 else None
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    parsed: datetime | None = None
    for fmt in TIME_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
            break
        except ValueError:
            continue
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
    return parsed


def parse_record(item: Any) -> CdrRecord | None:
    """One record of ``cdr/search`` (or a 30012 body); None when it is not an object or names no
    call."""
    if not isinstance(item, Mapping):
        return None
    call_id = _text(item, "call_id", wire.CALL_ID_CHARS)
    if not call_id:
        return None
    sent_time = _first(item, FIELDS["time"])
    return CdrRecord(
        call_id=call_id,
        started=pbx_time(sent_time),
        time_sent=printable(sent_time if isinstance(sent_time, str) else str(sent_time or ""), 64),
        caller=_text(item, "from", wire.NUMBER_CHARS),
        # The number dialled, as a 30016's "to" is; call_to names the extension that rang once the
        # PBX routed the call.
        called=_text(item, "did", wire.NUMBER_CHARS) or _text(item, "to", wire.NUMBER_CHARS),
        trunk_name=_text(item, "trunk", wire.TRUNK_NAME_CHARS),
        status=_text(item, "status", 64).upper(),
        call_type=_text(item, "type", 32).lower(),
        duration=_seconds(item, "duration"),
        talk=_seconds(item, "talk"),
        raw={str(k): _kept(v) for k, v in list(item.items())[:64]},
    )


def _kept(value: Any) -> Any:
    """A record's value as the audit row keeps it: scalars as sent, text cut to a field's size."""
    if isinstance(value, str):
        return printable(value, wire.MAX_FIELD_CHARS) if value.strip() else ""
    if value is None or isinstance(value, bool | int | float):
        return value
    return printable(str(value), wire.MAX_FIELD_CHARS)


def outcome_for(record: CdrRecord) -> str:
    """What the PBX did with the call, as ``Call.pbx_outcome``: "" for a status we cannot read
    (the audit row keeps the PBX's own word either way)."""
    status = record.status
    # "ANSWERD" is the doc table's spelling; a voicemail that picked up means the call was routed.
    if status.startswith("ANSWER") or status == "VOICEMAIL" or (record.talk or 0) > 0:
        return PbxOutcome.ANSWERED
    if status in {"NO ANSWER", "NOANSWER", "NO_ANSWER", "BUSY"}:
        return PbxOutcome.NO_ANSWER
    return ""


# --- recording unscreened calls -----------------------------------------------------------------


def screened_trunks() -> dict[str, Trunk]:
    return {t.name: t for t in Trunk.objects.filter(screening_enabled=True)}


def record_unscreened(
    record: CdrRecord, trunk: Trunk, *, fallback_time: datetime, outage: LinkOutage | None
) -> Call | None:
    """Store ``record`` as an unscreened call with its one audit row; None when any call with its
    id is stored already (seen live, or recorded by an earlier or a concurrent run)."""
    if Call.objects.filter(pbx_call_id=record.call_id).exists():
        return None
    now = timezone.now()
    started = record.started or fallback_time
    ended = started + timedelta(seconds=record.duration) if record.duration is not None else started
    caller_key = normalise_for_trunk(record.caller, trunk)
    outcome = outcome_for(record)
    status = record.status or "no status"
    try:
        with transaction.atomic():
            call = Call.objects.create(
                pbx_call_id=record.call_id,
                channel_id=CHANNEL_PLACEHOLDER,
                caller=record.caller,
                called=record.called,
                trunk=trunk,
                received_at=started,
                deadline=started,  # there was no window: nobody was asked
                status=CallStatus.UNSCREENED,
                finished_at=ended,
                pbx_outcome=outcome,
                pbx_outcome_at=now if outcome else None,
                caller_key=caller_key,
                caller_token=pseudonyms.for_caller(record.caller, caller_key),
            )
            store.record(
                store.event(
                    call,
                    AuditKind.UNSCREENED,
                    f"Unscreened: the PBX offered this call from {record.caller or 'withheld'} "
                    f"to {record.called} while the event link was down and routed it itself "
                    f"(PBX status {status})",
                    at=now,
                    pbx_status=record.status,
                    pbx_outcome=outcome,
                    time_start=record.time_sent,
                    time_read=record.started is not None,
                    call_duration=record.duration,
                    talk_duration=record.talk,
                    trunk_name=trunk.name,
                    outage=outage.pk if outage is not None else None,
                    record=record.raw,
                )
            )
    except IntegrityError:
        return None  # a concurrent run stored it first
    log.info("call %s on %s recorded as unscreened (%s)", record.call_id, trunk.name, status)
    return call


def _in_scope(records: Iterable[CdrRecord], trunks: Mapping[str, Trunk]) -> list[CdrRecord]:
    """The inbound records on screened trunks, one per call id."""
    kept: dict[str, CdrRecord] = {}
    for record in records:
        if record.inbound and record.trunk_name in trunks:
            kept.setdefault(record.call_id, record)
    return list(kept.values())


# --- outage windows -----------------------------------------------------------------------------


def _open_window() -> LinkOutage | None:
    return LinkOutage.objects.filter(ended_at__isnull=True).order_by("started_at").first()


def link_lost(at: datetime | None = None) -> LinkOutage:
    """The link went from up to not up: open a window (or keep the one already open)."""
    return _open_window() or LinkOutage.objects.create(started_at=at or timezone.now())


def last_heard(now: datetime | None = None) -> datetime:
    """The last moment the product is known to have been hearing the PBX, at most the look-back
    ago; now when nothing is known (a first start: there is nothing to reconcile)."""
    now = now or timezone.now()
    newest_call = (
        Call.objects.exclude(status=CallStatus.UNSCREENED)
        .order_by("-received_at")
        .values_list("received_at", flat=True)
        .first()
    )
    newest_report = (
        AuditEvent.objects.filter(kind__in=HEARD_KINDS)
        .order_by("-at")
        .values_list("at", flat=True)
        .first()
    )
    last_window = LinkOutage.objects.aggregate(end=Max("ended_at"))["end"]
    known = [t for t in (newest_call, newest_report, last_window) if t is not None]
    if not known:
        return now
    return min(now, max(max(known), now - lookback()))


def listener_started(now: datetime | None = None) -> LinkOutage:
    """The listener starts (a restart, or after a crash): the time since we last heard the PBX is
    a window; one left open by a process that died keeps its own start."""
    return _open_window() or LinkOutage.objects.create(started_at=last_heard(now))


def link_back(at: datetime | None = None) -> list[int]:
    """The link is up again: close the open windows; returns their ids, to reconcile."""
    at = at or timezone.now()
    ids = list(LinkOutage.objects.filter(ended_at__isnull=True).values_list("pk", flat=True))
    LinkOutage.objects.filter(pk__in=ids, ended_at__isnull=True).update(ended_at=at)
    return ids


def reconcile(outage: LinkOutage | int, client: PbxClient | None = None) -> LinkOutage:
    """Read the PBX's records of a closed window and record the calls nobody saw. On failure the
    window keeps the error and stays unreconciled (the sweeper retries it); never raises for
    what the PBX does."""
    if not isinstance(outage, LinkOutage):
        outage = LinkOutage.objects.get(pk=outage)
    low, high = outage.started_at - SEARCH_SLACK, (outage.ended_at or timezone.now()) + SEARCH_SLACK
    try:
        client = client or PbxClient.from_settings()
        items = client.cdr_search(low.timestamp(), high.timestamp())
    except (PbxError, PbxTransportError, PbxNotConfigured) as exc:
        error = printable(f"cdr/search failed: {exc}", MAX_ERROR_CHARS)
        LinkOutage.objects.filter(pk=outage.pk).update(error=error)
        outage.error = error
        log.warning("outage %s (from %s) not reconciled: %s", outage.pk, outage.started_at, exc)
        return outage
    records = [r for r in map(parse_record, items) if r is not None]
    if len(records) < len(items):
        log.warning("cdr/search: %d records without a call id ignored", len(items) - len(records))
    trunks = screened_trunks()
    in_scope = _in_scope(records, trunks)
    for record in in_scope:
        trunk = trunks[record.trunk_name]
        record_unscreened(record, trunk, fallback_time=outage.started_at, outage=outage)
    # Counted from the record, not from this run: a rerun, a concurrent run or a late 30012
    # (record_orphan_cdr) may have stored some of them.
    unscreened_ids = set(
        Call.objects.filter(
            status=CallStatus.UNSCREENED, received_at__gte=low, received_at__lte=high
        ).values_list("pbx_call_id", flat=True)
    )
    offered = len({r.call_id for r in in_scope} | unscreened_ids)
    unscreened = len(unscreened_ids)
    now = timezone.now()
    LinkOutage.objects.filter(pk=outage.pk).update(
        reconciled_at=now, offered=offered, unscreened=unscreened, error=""
    )
    outage.reconciled_at, outage.offered, outage.unscreened, outage.error = (
        now,
        offered,
        unscreened,
        "",
    )
    log.info(
        "outage %s reconciled: %d calls offered on screened trunks, %d of them unscreened",
        outage.pk,
        offered,
        unscreened,
    )
    return outage


def reconcile_all(ids: Iterable[int], client: PbxClient | None = None) -> list[LinkOutage]:
    return [reconcile(pk, client) for pk in ids]


def record_orphan_cdr(raw: Mapping[str, Any]) -> Call | None:
    """A 30012 for a call we never saw: a call offered while the link was down that was still
    going on when its window was reconciled. Recorded unscreened when it is inbound on a screened
    trunk and started inside a window (else it is no call of ours: ignored)."""
    record = parse_record(raw)
    if record is None or not record.inbound or record.started is None:
        return None
    trunk = screened_trunks().get(record.trunk_name)
    if trunk is None:
        return None
    started = record.started
    outage = (
        LinkOutage.objects.filter(started_at__lte=started + SEARCH_SLACK)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gte=started - SEARCH_SLACK))
        .order_by("-started_at")
        .first()
    )
    if outage is None:
        return None
    call = record_unscreened(record, trunk, fallback_time=started, outage=outage)
    if call is not None and outage.reconciled_at is not None:
        # Counted in by hand: the window's run that counted its calls has been.
        LinkOutage.objects.filter(pk=outage.pk).update(
            offered=F("offered") + 1, unscreened=F("unscreened") + 1
        )
    return call


# --- the sweeper's retry ------------------------------------------------------------------------


def retry() -> int:
    """Reconcile the closed windows a failed run left. Returns how many were reconciled now."""
    pending = list(
        LinkOutage.objects.filter(ended_at__isnull=False, reconciled_at__isnull=True)
        .order_by("started_at")
        .values_list("pk", flat=True)[:20]
    )
    if not pending:
        return 0
    try:
        client = PbxClient.from_settings()
    except PbxNotConfigured:
        return 0
    done = reconcile_all(pending, client)
    return sum(1 for outage in done if outage.reconciled_at is not None)


async def _retry_in_background() -> None:
    await runtime.run_blocking(retry)


# Every RETRY_SECONDS one process retries, in the database pool: intake never waits for it.
retry_scheduler = periodic.Periodic(
    "outage-retry",
    _retry_in_background,
    every=lambda: RETRY_SECONDS,
    enabled=lambda: bool(settings.PBX_BASE_URL),
    retry_after=RETRY_SECONDS,
    claim_every=RETRY_SECONDS,
)
