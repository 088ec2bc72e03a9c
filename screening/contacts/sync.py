"""The PBX's company contacts copied into local contacts (source "pbx", external_id = PBX id).

``sync_contacts`` reads every page first (``company_contact/list`` with an explicit page size)
and only then writes, in one transaction: a PBX error or a dead PBX leaves the table as it was.
Only rows of source "pbx" are added, updated or removed; manual, imported and lookup contacts are
never touched.

Every CONTACT_SYNC_MINUTES one server process syncs (``scheduler``, a screening.periodic job);
after a failed sync the next try comes sooner. The PBX is read in the PBX pool and the rows are
written in the database pool (``screening.runtime``), in a task of its own, so intake and the
sweeper never wait for it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from screening import periodic, runtime
from screening.calls.numbers import normalise
from screening.contacts.store import LABEL_CHARS, NAME_CHARS, Entry, Outcome, apply
from screening.models import ContactSource
from screening.pbx.client import PbxClient, printable
from screening.pbx.events import NUMBER_CHARS
from screening.pbx.trunks import PBX_PROBLEMS

log = logging.getLogger("screening.contacts")

# The company contact's number fields, in the order a card would prefer them (documented names;
# what distinguishes "business" from "business2" on the PBX is unconfirmed).
NUMBER_FIELDS = ("business", "business2", "mobile", "mobile2", "home", "home2", "other")
RETRY_SECONDS = 60  # after a failed sync: try again this soon, not a whole interval later


@dataclass
class SyncResult:
    outcome: Outcome
    read: int  # company contacts the PBX listed
    skipped: int  # listed without an id or without any usable number


def sync_contacts(client: PbxClient) -> SyncResult:
    """Read the PBX's company contacts, then make the local "pbx" rows match them."""
    items = client.company_contacts()
    return apply_pbx_contacts(items)


def apply_pbx_contacts(items: list[dict[str, Any]]) -> SyncResult:
    entries = [entry for entry in map(pbx_entry, items) if entry is not None]
    outcome = apply(ContactSource.PBX, entries, remove_missing=True)
    return SyncResult(outcome=outcome, read=len(items), skipped=len(items) - len(entries))


def pbx_entry(item: dict[str, Any]) -> Entry | None:
    """One ``company_contact/list`` item as a contact, or None when it cannot match a caller.
    Odd fields (missing, not strings, oversized, control characters) are tolerated: cleaned,
    cut or left out."""
    contact_id = item.get("id")
    if isinstance(contact_id, bool) or not isinstance(contact_id, int | str):
        return None
    key = str(contact_id).strip()
    if not key or len(key) > 64:
        return None
    numbers: list[tuple[str, str]] = []
    for name in NUMBER_FIELDS:
        number = printable(item.get(name), NUMBER_CHARS)
        if number and normalise(number) and all(n != number for n, _ in numbers):
            numbers.append((number, name[:LABEL_CHARS]))
    if not numbers:
        return None
    organisation = printable(item.get("company"), NAME_CHARS)
    name = printable(item.get("contact_name"), NAME_CHARS) or organisation or numbers[0][0]
    return Entry(key=key, name=name, organisation=organisation, numbers=tuple(numbers))


# --- the sweeper's schedule ------------------------------------------------------------------


def enabled() -> bool:
    return settings.CONTACT_SYNC_MINUTES > 0 and bool(settings.PBX_BASE_URL)


def _interval() -> float:
    return settings.CONTACT_SYNC_MINUTES * 60


def _failed(exc: BaseException) -> None:
    log.warning("contact sync from the PBX failed, contacts unchanged: %s", exc)
    scheduler.failed()


def _done(result: SyncResult, started: float) -> None:
    log.info(
        "contact sync from the PBX: %d listed, %s, %d skipped (%.0f ms)",
        result.read,
        result.outcome.describe(),
        result.skipped,
        (time.monotonic() - started) * 1000,
    )


def sync_if_due() -> SyncResult | None:
    """The blocking form (tests, cron-like callers): sync when this caller wins the claim."""
    if not enabled() or not scheduler.claim():
        return None
    started = time.monotonic()
    try:
        result = sync_contacts(PbxClient.from_settings())
    except PBX_PROBLEMS as exc:
        _failed(exc)
        return None
    _done(result, started)
    return result


async def _sync_in_background() -> None:
    started = time.monotonic()
    try:
        client = PbxClient.from_settings()
        items = await runtime.run_pbx(client.company_contacts)
        result = await runtime.run_blocking(apply_pbx_contacts, items)
    except PBX_PROBLEMS as exc:
        log.warning("contact sync from the PBX failed, contacts unchanged: %s", exc)
        raise periodic.Failed from exc
    _done(result, started)


# PBX reads in the PBX pool, writes in the database pool: intake and the sweeper never wait.
scheduler = periodic.Periodic(
    "contact-sync",
    _sync_in_background,
    every=_interval,
    enabled=enabled,
    retry_after=RETRY_SECONDS,
)
