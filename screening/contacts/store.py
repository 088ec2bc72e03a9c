"""Writing contacts of one source: add, update only what changed, optionally remove the rest.

Rows are found by ``(source, external_id)``; rows of any other source are never read for writing,
so an import never touches PBX rows and a sync never touches hand-made ones. A contact whose name,
organisation, note and numbers are already as given is not written at all (its ``updated_at``
stays), which is what makes re-importing a file and re-syncing the PBX change nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from screening.calls.numbers import normalise
from screening.models import Contact, ContactNumber

NAME_CHARS = 200  # Contact.name and Contact.organisation
LABEL_CHARS = 32  # ContactNumber.label
KEY_CHARS = 200  # Contact.external_id
BATCH = 500  # rows per INSERT: well under SQLite's limit of bound parameters


@dataclass(frozen=True)
class Entry:
    """One contact as a source describes it."""

    key: str  # external_id: a PBX id, a vCard UID or a key made from name + organisation
    name: str
    organisation: str
    numbers: tuple[tuple[str, str], ...]  # (number as given, label), in the source's order
    note: str | None = None  # None: the source has no notes; a note typed in admin stays


@dataclass
class Outcome:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{len(self.created)} added, {len(self.updated)} updated, "
            f"{self.unchanged} unchanged, {len(self.removed)} removed"
        )


def apply(source: str, entries: Iterable[Entry], *, remove_missing: bool) -> Outcome:
    """Make ``source``'s contacts match ``entries``; the changes are written in one transaction.

    What to change is worked out before the transaction, so the database's write lock (all of
    SQLite's, on the embedded setup) is held only for the writes, in bulk: a sync that finds
    nothing new writes nothing, and intake never queues behind the reading."""
    outcome = Outcome()
    existing: dict[str, Contact] = {}
    for contact in Contact.objects.filter(source=source).prefetch_related("numbers"):
        existing.setdefault(contact.external_id, contact)
    seen: set[str] = set()
    creates: list[Entry] = []
    updates: list[tuple[Contact, Entry]] = []
    for entry in entries:
        if entry.key in seen:
            continue
        seen.add(entry.key)
        contact = existing.get(entry.key)
        if contact is None:
            creates.append(entry)
        elif _same(contact, entry):
            outcome.unchanged += 1
        else:
            updates.append((contact, entry))
    gone = [c for key, c in existing.items() if key not in seen] if remove_missing else []
    outcome.created = [entry.name for entry in creates]
    outcome.updated = [entry.name for _, entry in updates]
    outcome.removed = [contact.name for contact in gone]
    if not (creates or updates or gone):
        return outcome
    now = timezone.now()
    with transaction.atomic():
        made = Contact.objects.bulk_create(
            [
                Contact(
                    name=entry.name,
                    organisation=entry.organisation,
                    note=entry.note or "",
                    source=source,
                    external_id=entry.key,
                    created_at=now,
                    updated_at=now,
                )
                for entry in creates
            ],
            batch_size=BATCH,
        )
        new_numbers = [n for c, e in zip(made, creates, strict=True) for n in _numbers(c, e)]
        for contact, entry in updates:
            contact.name = entry.name
            contact.organisation = entry.organisation
            if entry.note is not None:
                contact.note = entry.note
            contact.updated_at = now
            contact.save(update_fields=["name", "organisation", "note", "updated_at"])
            new_numbers.extend(_numbers(contact, entry))
        ContactNumber.objects.filter(contact__in=[c.pk for c, _ in updates]).delete()
        # bulk_create skips ContactNumber.save, so _numbers fills ``normalised`` itself.
        ContactNumber.objects.bulk_create(new_numbers, batch_size=BATCH)
        Contact.objects.filter(source=source, pk__in=[c.pk for c in gone]).delete()
    return outcome


def _same(contact: Contact, entry: Entry) -> bool:
    have = tuple((n.number, n.label) for n in contact.numbers.all())
    return (
        contact.name == entry.name
        and contact.organisation == entry.organisation
        and (entry.note is None or contact.note == entry.note)
        and have == entry.numbers
    )


def _numbers(contact: Contact, entry: Entry) -> list[ContactNumber]:
    return [
        ContactNumber(contact=contact, number=number, normalised=normalise(number), label=label)
        for number, label in entry.numbers
    ]
